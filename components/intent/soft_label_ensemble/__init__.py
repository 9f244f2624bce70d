from mangadistill_components.intent.soft_label_ensemble.component import intent_soft_label_ensemble

__all__ = ["intent_soft_label_ensemble"]
