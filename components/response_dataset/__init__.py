from mangadistill_components.response_dataset.component import response_dataset

__all__ = ["response_dataset"]
