from mangadistill_components.intent.gate_check.component import intent_gate_check

__all__ = ["intent_gate_check"]
