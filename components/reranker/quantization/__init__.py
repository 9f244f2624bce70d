from mangadistill_components.reranker.quantization.component import reranker_quantization

__all__ = ["reranker_quantization"]
