from mangadistill_components.response.curation.component import response_curation

__all__ = ["response_curation"]
