from mangadistill_components.distillation_training.component import distillation_training

__all__ = ["distillation_training"]
