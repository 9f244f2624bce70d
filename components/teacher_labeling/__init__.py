from mangadistill_components.teacher_labeling.component import teacher_labeling

__all__ = ["teacher_labeling"]
