from mangadistill_components.intent.handwritten_eval.component import intent_handwritten_eval

__all__ = ["intent_handwritten_eval"]
