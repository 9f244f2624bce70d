"""KFP component: split the prompts into shards for parallel teacher labelling."""

from typing import List  # noqa: UP035 (KFP reads the annotation: it knows typing.List, not list[int])

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("teacher-labeling"), install_kfp_package=False)
def response_shard_prompts(
    prompts: Input[Dataset],
    shards: Output[Dataset],
    metrics: Output[Metrics],
    shard_count: int = 1,
    on_bad_rows: str = "quarantine",
) -> List[int]:  # noqa: UP006
    """Validates and redacts the prompts once, then splits them by a stable hash of prompt_id into shards.

    Args:
        prompts: `prompt_id` and `prompt` (`prepared_prompts` from response_dataset, or any table the labelling
            stage reads).
        shard_count: Number of shards (>= 1); some may be empty on a small table.
        on_bad_rows: `quarantine` (default) or `fail`.

    Returns:
        Output: The shard indices 0..shard_count-1, for a `dsl.ParallelFor` of response_teacher_labeling tasks
            (each with `shard` set to its index).
        shards: A folder: shard-<i>.parquet per shard, quarantine.parquet (rows refused here) and manifest.json
            (the prompt_ids of each shard), which response_merge_labels checks the shards' outputs against.
        metrics: Prompts, shards, largest and smallest shard, quarantined rows, redacted personal data per kind.
    """
    from mangadistill.response.stages import run_response_shard_prompts

    indices, summary = run_response_shard_prompts(prompts.path, shards.path, shard_count, on_bad_rows=on_bad_rows)
    for name, value in summary.items():
        metrics.log_metric(name, value)
    return indices
