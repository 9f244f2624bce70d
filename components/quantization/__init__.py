from mangadistill_components.quantization.component import quantization

__all__ = ["quantization"]
