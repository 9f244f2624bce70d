"""KFP component: the hand-written intent evaluation set (packaged, or a user's own file), validated."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("gate-check"), install_kfp_package=False)
def intent_handwritten_eval(
    handwritten_set: Output[Dataset],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
    uri: str = "",
    on_bad_rows: str = "quarantine",
    labels_uri: str = "",
    teacher_model: str = "",
):
    """Provides the hand-written evaluation set the gate reads beside the generated eval split: messages a person
    wrote, with the intent to act on first and, for ambiguous ones, a second plausible intent. It is never used
    for training or for choosing defaults.

    Args:
        uri: Empty for the packaged set (104 messages, 27 ambiguous; resources/HANDWRITTEN.md), or a user's own
            Parquet/JSONL/CSV file (local or gs://) with `message_id`, `text`, `label` (the `labelled_messages`
            contract) and optionally `also_plausible` (a second intent or null).
        on_bad_rows: `quarantine` (default) or `fail`.
        labels_uri: The intent label set: empty for the built-in eight, `teacher` for the teacher classifier's
            config id2label, or a YAML file (local or gs://) `intents: [{name, definition, rare}]`
            (mangadistill.intent.labels).
        teacher_model: The teacher classifier, read only when labels_uri is `teacher`.

    Returns:
        handwritten_set: The `handwritten_messages` contract: message_id, text, label, also_plausible.
        quarantine: Rows refused (empty text, unknown intent, duplicate message_id, ...), with reasons.
        metrics: Rows, ambiguous rows, rows per intent, quarantined rows.
    """
    from mangadistill.intent.stages import run_handwritten_eval

    summary = run_handwritten_eval(uri, handwritten_set.path, quarantine.path, on_bad_rows=on_bad_rows,
                                   labels_uri=labels_uri, teacher_model=teacher_model)
    for name, value in summary.items():
        metrics.log_metric(name, value)
