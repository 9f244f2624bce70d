"""KFP component: curate teacher responses against the catalog and build the training mixture."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("response-curation"), install_kfp_package=False)
def response_curation(
    teacher_responses: Input[Dataset],
    human_corrected: Input[Dataset],
    refusal_escalation: Input[Dataset],
    train: Output[Dataset],
    validation: Output[Dataset],
    review: Output[Dataset],
    manifest: Output[Dataset],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
    scale: float = 1.0,
    seed: int = 0,
    validation_fraction: float = 0.05,
    catalog_uri: str = "",
    on_bad_rows: str = "quarantine",
):
    """Keeps teacher mistakes out of training: fact-checks every teacher answer against the catalog.

    Args:
        teacher_responses: The `teacher_responses` contract, from response_teacher_labeling.
        human_corrected: Human-corrected examples (`response_examples`), from response_dataset.
        refusal_escalation: Refusal/escalation examples (`response_examples`), from response_dataset.
        scale: Multiplies the full training mixture; use the dataset stage's value.
        seed: Seed of the selection, the split and the order.
        validation_fraction: Share of prompts in the validation split.
        catalog_uri: Catalog JSONL the fact checker uses; empty for the packaged sample catalog.
        on_bad_rows: `quarantine` (default) or `fail`.

    Returns:
        train: The training mixture (`response_examples`): kept teacher answers, human-corrected answers
            (replacing the teacher's for the same prompt) and refusal/escalation examples.
        validation: The validation part of the mixture.
        review: Teacher answers with unsupported claims (`response_review`), kept out of training, with the
            findings, for a person to correct.
        manifest: JSON: target, available, selected and shortfall per source; the curation counts.
        quarantine: Rows refused, with reasons.
        metrics: Teacher hallucination rate, answers kept, replaced and held for review, rows per source.
    """
    from mangadistill.response.stages import run_response_curation

    summary = run_response_curation(
        teacher_responses.path, human_corrected.path, refusal_escalation.path, train.path, validation.path,
        review.path, manifest.path, quarantine.path, scale=scale, seed=seed,
        validation_fraction=validation_fraction, catalog_uri=catalog_uri, on_bad_rows=on_bad_rows,
    )
    for name, value in summary.items():
        metrics.log_metric(name, value)
