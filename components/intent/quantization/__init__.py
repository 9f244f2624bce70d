from mangadistill_components.intent.quantization.component import intent_quantization

__all__ = ["intent_quantization"]
