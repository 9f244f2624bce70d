from mangadistill_components.response.publish_model.component import response_publish_model

__all__ = ["response_publish_model"]
