from mangadistill_components.reranker.publish_model.component import reranker_publish_model

__all__ = ["reranker_publish_model"]
