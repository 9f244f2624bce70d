from mangadistill_components.soft_label_ensemble.component import soft_label_ensemble

__all__ = ["soft_label_ensemble"]
