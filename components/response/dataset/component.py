"""KFP component: the response dataset (import, redact, de-duplicate, split, pick the mixture's examples)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("response-dataset"), install_kfp_package=False)
def response_dataset(
    production_prompts: Input[Dataset],
    human_corrected: Input[Dataset],
    refusal_escalation: Input[Dataset],
    prompts: Output[Dataset],
    human_corrected_examples: Output[Dataset],
    refusal_escalation_examples: Output[Dataset],
    quarantine: Output[Dataset],
    manifest: Output[Dataset],
    metrics: Output[Metrics],
    scale: float = 1.0,
    validation_fraction: float = 0.05,
    seed: int = 0,
    on_bad_rows: str = "quarantine",
):
    """Prepares the response training data: personal data is redacted here, before any teacher sees a prompt.

    Args:
        production_prompts: Parquet/JSONL with a `prompt` column (`prompt_id` optional), local or gs://.
        human_corrected: Answers a person corrected: `prompt` and `response` columns (`prompt_id` optional).
        refusal_escalation: Refusal and hand-off examples: `prompt` and `response` columns.
        scale: Multiplies the full training mixture (25,000 production prompts and teacher responses, 5,000
            human-corrected, 2,000 refusal/escalation); 0.01 takes 250 / 250 / 50 / 20.
        validation_fraction: Share of prompts in the validation split (a hash of the normalised prompt).
        seed: Seed of the split and of the selection when a source has more rows than its target.
        on_bad_rows: `quarantine` (default) or `fail`.

    Returns:
        prompts: The `prepared_prompts` contract: redacted, de-duplicated, split; the only text a teacher sees.
        human_corrected_examples: The selected human-corrected rows (`response_examples`, redacted).
        refusal_escalation_examples: The selected refusal/escalation rows (`response_examples`, redacted).
        quarantine: Rows refused (empty text, repeated ids, duplicate prompts), with reasons.
        manifest: JSON: target, available, selected and shortfall per source, quarantine reasons.
        metrics: redacted_<kind> per kind of personal data, duplicates, rows per split and source.
    """
    from mangadistill.response.stages import run_response_dataset_stage

    summary = run_response_dataset_stage(
        production_prompts.path, human_corrected.path, refusal_escalation.path, prompts.path,
        human_corrected_examples.path, refusal_escalation_examples.path, quarantine.path, manifest.path,
        scale=scale, validation_fraction=validation_fraction, seed=seed, on_bad_rows=on_bad_rows,
    )
    for name, value in summary.items():
        metrics.log_metric(name, value)
