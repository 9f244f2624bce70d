from mangadistill_components.response.teacher_labeling.component import response_teacher_labeling

__all__ = ["response_teacher_labeling"]
