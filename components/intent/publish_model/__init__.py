from mangadistill_components.intent.publish_model.component import intent_publish_model

__all__ = ["intent_publish_model"]
