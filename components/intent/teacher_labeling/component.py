"""KFP component: the intent teacher ensemble's members (classifier, escalation rules, LLM adjudicator) vote on
every message."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("teacher-labeling"), install_kfp_package=False)
def intent_teacher_labeling(
    messages: Input[Dataset],
    teacher_model: str,
    member_votes: Output[Dataset],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
    rules_uri: str = "",
    adjudicator: str = "local",
    adjudicator_model: str = "smollm2-135m",
    adjudicator_base_url: str = "",
    adjudicator_structured_api: str = "",
    ambiguity_margin: float = 0.2,
    ambiguity_entropy: float = 0.6,
    max_adjudications: int = 1000,
    on_bad_rows: str = "quarantine",
    labels_uri: str = "",
):
    """Runs the teacher classifier and the escalation rules over every message, and asks the adjudicator about
    the ambiguous ones.

    Args:
        messages: Parquet/JSONL with `message_id` and `text` (the `messages` contract; extra columns ignored).
        teacher_model: The fine-tuned teacher classifier: a local folder, a gs:// prefix or a builtin name.
        rules_uri: Escalation rules YAML; empty for the packaged, versioned rules.
        adjudicator: `local` (a local instruct model), `openai` (an OpenAI-compatible chat API; the key comes from
            the TEACHER_API_KEY environment variable, set from a Kubernetes secret) or `none`.
        adjudicator_model: Builtin name or folder for `local`; the API's model name for `openai`.
        adjudicator_base_url: Base URL of the chat API (`.../v1`) for `openai`.
        adjudicator_structured_api: For `openai`: empty asks in free text (any chat API); `structured_outputs`
            (vLLM >= 0.12; OpenAI's `response_format`) or `guided` (older vLLM's `guided_json`) also sends the
            answer's JSON schema, so a served model cannot answer outside it.
        ambiguity_margin: Rows whose classifier top-2 margin p(1) − p(2) is below this go to the adjudicator.
        ambiguity_entropy: Rows whose normalised classifier entropy −Σ p ln p / ln K is above this go to the
            adjudicator.
        max_adjudications: Cap on adjudicator calls per run (the least certain rows first).
        on_bad_rows: `quarantine` (default) or `fail`.
        labels_uri: The intent label set: empty for the built-in eight, `teacher` for the teacher classifier's
            config id2label, or a YAML file (local or gs://) `intents: [{name, definition, rare}]`
            (mangadistill.intent.labels).

    Returns:
        member_votes: The `member_votes` contract: each member's output and who voted, per message; the label
            set in its schema metadata (the later stages read it from there).
        quarantine: Rows refused (malformed, empty text, duplicate message_id), with reasons.
        metrics: Row and quarantine counts, ambiguous and adjudicated rows, rule hits.
    """
    from mangadistill.intent.labeling import LabelingConfig
    from mangadistill.intent.stages import run_teacher_labeling

    config = LabelingConfig(
        teacher_model=teacher_model, rules_uri=rules_uri, adjudicator=adjudicator, adjudicator_model=adjudicator_model,
        adjudicator_base_url=adjudicator_base_url, adjudicator_structured_api=adjudicator_structured_api,
        ambiguity_margin=ambiguity_margin, ambiguity_entropy=ambiguity_entropy, max_adjudications=max_adjudications,
        labels_uri=labels_uri,
    )
    summary = run_teacher_labeling(messages.path, member_votes.path, quarantine.path, config, on_bad_rows=on_bad_rows)
    for name, value in summary.items():
        metrics.log_metric(name, value)
