from mangadistill_components.response.quantization.component import response_quantization

__all__ = ["response_quantization"]
