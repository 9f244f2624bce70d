from mangadistill_components.reranker.teacher_labeling.component import reranker_teacher_labeling

__all__ = ["reranker_teacher_labeling"]
