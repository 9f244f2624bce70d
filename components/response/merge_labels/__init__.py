from mangadistill_components.response.merge_labels.component import response_merge_labels

__all__ = ["response_merge_labels"]
