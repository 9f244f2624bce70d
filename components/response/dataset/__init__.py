from mangadistill_components.response.dataset.component import response_dataset

__all__ = ["response_dataset"]
