from mangadistill_components.gate_check.component import gate_check

__all__ = ["gate_check"]
