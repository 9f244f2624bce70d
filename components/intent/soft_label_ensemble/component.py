"""KFP component: the intent teacher ensemble's soft labels (member votes -> one probability per intent per
message)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("soft-label-ensemble"), install_kfp_package=False)
def intent_soft_label_ensemble(
    member_votes: Input[Dataset],
    soft_labels: Output[Dataset],
    report: Output[Dataset],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
    classifier_weight: float = 1.0,
    adjudicator_weight: float = 0.5,
    temperature: float = 1.0,
    rule_override: float = 0.4,
    on_bad_rows: str = "quarantine",
):
    """Combines member votes into soft labels: weighted mean, temperature, then high-risk rule overrides.

    Args:
        member_votes: The `member_votes` contract, from intent_teacher_labeling.
        classifier_weight: Weight of the fine-tuned classifier's distribution.
        adjudicator_weight: Weight of the adjudicator's distribution on rows it was asked about.
        temperature: p ∝ exp(log p̄ / T); above 1 keeps more ambiguity, below 1 sharpens.
        rule_override: Probability mass moved onto a high-risk rule's intent where a rule fired.
        on_bad_rows: `quarantine` (default) or `fail`.

    Returns:
        soft_labels: The `soft_labels` contract (probabilities in INTENTS order and the hard label).
        report: JSON: agreement between members, entropy histogram, the most ambiguous examples.
        quarantine: Rows refused, with reasons.
        metrics: Agreement and entropy figures.
    """
    from mangadistill.intent.ensemble import EnsembleConfig
    from mangadistill.intent.stages import run_soft_label_ensemble

    config = EnsembleConfig(classifier_weight=classifier_weight, adjudicator_weight=adjudicator_weight,
                            temperature=temperature, rule_override=rule_override)
    summary = run_soft_label_ensemble(member_votes.path, soft_labels.path, report.path, quarantine.path, config,
                                      on_bad_rows=on_bad_rows)
    for name, value in summary.items():
        metrics.log_metric(name, value)
