from mangadistill_components.intent.distillation_training.component import intent_distillation_training

__all__ = ["intent_distillation_training"]
