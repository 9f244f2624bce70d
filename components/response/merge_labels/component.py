"""KFP component: put the teacher labelling shards back together, checking no prompt is lost or doubled."""

from typing import List  # noqa: UP035 (KFP reads the annotation: it knows typing.List, not list[...])

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("teacher-labeling"), install_kfp_package=False)
def response_merge_labels(
    shards: Input[Dataset],
    shard_responses: Input[List[Dataset]],  # noqa: UP006
    shard_quarantines: Input[List[Dataset]],  # noqa: UP006
    shard_metrics: Input[List[Metrics]],  # noqa: UP006
    teacher_responses: Output[Dataset],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
):
    """Concatenates the shards' answers and quarantines in the input's row order, after checking that every
    prompt the split gave a shard came back from it exactly once, answered or quarantined.

    Args:
        shards: The folder response_shard_prompts wrote (its manifest names each shard's prompt_ids).
        shard_responses: Each shard's `teacher_responses` (`dsl.Collected` over the labelling tasks; any order).
        shard_quarantines: Each shard's `quarantine` (any order).
        shard_metrics: Each shard's `metrics` (any order).

    Returns:
        teacher_responses: The `teacher_responses` contract, one answer per prompt, as one unsharded
            response_teacher_labeling task would write it. A lost, doubled or unknown prompt_id fails the task
            with an error naming them.
        quarantine: The split's refused rows, then the shards' (answers that failed after retries), with the
            source file's row numbers.
        metrics: The shards' metrics summed (wall_s: the longest shard), quarantined rows, the teacher's tokens
            per second over every answer, shards.
    """
    from mangadistill.response.stages import run_response_merge_labels

    summary = run_response_merge_labels(
        shards.path, [table.path for table in shard_responses], [table.path for table in shard_quarantines],
        [table.metadata for table in shard_metrics], teacher_responses.path, quarantine.path,
    )
    for name, value in summary.items():
        metrics.log_metric(name, value)
