from mangadistill_components.core.run_event.component import core_run_event

__all__ = ["core_run_event"]
