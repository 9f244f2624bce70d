from mangadistill_components.response.gate_check.component import response_gate_check

__all__ = ["response_gate_check"]
