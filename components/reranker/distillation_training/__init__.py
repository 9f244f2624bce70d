from mangadistill_components.reranker.distillation_training.component import reranker_distillation_training

__all__ = ["reranker_distillation_training"]
