from mangadistill_components.response.distillation_training.component import response_distillation_training

__all__ = ["response_distillation_training"]
