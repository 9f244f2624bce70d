from mangadistill_components.reranker.gate_check.component import reranker_gate_check

__all__ = ["reranker_gate_check"]
