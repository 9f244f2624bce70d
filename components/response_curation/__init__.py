from mangadistill_components.response_curation.component import response_curation

__all__ = ["response_curation"]
