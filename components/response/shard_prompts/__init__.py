from mangadistill_components.response.shard_prompts.component import response_shard_prompts

__all__ = ["response_shard_prompts"]
