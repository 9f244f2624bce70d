from mangadistill_components.intent.teacher_labeling.component import intent_teacher_labeling

__all__ = ["intent_teacher_labeling"]
