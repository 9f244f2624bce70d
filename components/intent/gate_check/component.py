"""KFP component: evaluate the intent student on the generated eval split and the hand-written set, and decide its
promotion."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("gate-check"), install_kfp_package=False)
def intent_gate_check(
    eval_set: Input[Dataset],
    eval_soft_labels: Input[Dataset],
    eval_member_votes: Input[Dataset],
    handwritten_set: Input[Dataset],
    handwritten_soft_labels: Input[Dataset],
    handwritten_member_votes: Input[Dataset],
    student: Input[Model],
    baseline: Input[Model],
    quantized: Input[Model],
    teacher_model: str,
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
    event: Output[Artifact],
    gates_uri: str = "",
    student_name: str = "intent-student",
    teacher_name: str = "intent-teacher-ensemble",
    run_events_root: str = "",
    pipeline_root: str = "",
    run_id: str = "",
) -> NamedTuple("IntentGateOutputs", [("promote", bool)]):
    """Measures the student against the teacher ensemble and the hard-label baseline on human labels, on the
    generated eval split and on the hand-written set (metrics prefixed `handwritten_`); applies the gates
    (accuracy_retained = student / teacher-ensemble accuracy on each set, rare-intent recall vs the baseline,
    ECE, CPU latency speed-up, int8 size ratio and accuracy drop). On the hand-written ambiguous messages it
    reports top-2 accuracy (label or also_plausible in the top 2), NLL = mean −ln p(label) and ECE.

    Args:
        eval_set: The human-labelled split (`labelled_messages` contract).
        eval_soft_labels: The teacher ensemble's soft labels for the eval messages.
        eval_member_votes: The members' votes for the same messages (the teacher classifier's accuracy).
        handwritten_set: The hand-written set (`handwritten_messages` contract), from intent_handwritten_eval.
        handwritten_soft_labels: The teacher ensemble's soft labels for the hand-written messages.
        handwritten_member_votes: The members' votes for the hand-written messages.
        student: The distilled student (transformers classifier folder).
        baseline: The hard-label-only student trained the same way (β = 1).
        quantized: The student's int8 folder, from intent_quantization.
        teacher_model: The teacher classifier (run only for latency and size against the student): a folder,
            a gs:// prefix or a builtin name.
        gates_uri: Gates YAML; empty for the packaged intent gates.
        student_name: Name recorded in the event.
        teacher_name: Name recorded in the event.
        run_events_root: Where a copy of the event goes for the pipeline's exit handler:
            `<run_events_root>/<run_id>/distilled_model_eval.json` (gs:// or a folder); empty:
            `<pipeline_root>/events`.
        pipeline_root: The run's pipeline root (the pipeline passes its placeholder, which a KFP cluster does not
            fill in: set run_events_root there).
        run_id: The run's id (the pipeline passes its run id placeholder); empty: no copy.

    Returns:
        metrics: Every gated and reported figure.
        confusion: The student's confusion matrix on the generated split (rows: human label).
        report: HTML report with the gate table and plots.
        event: The `distilled_model_eval` JSON event.
        promote: True only when every gate passes; a missing or NaN metric fails its gate.
    """
    from mangadistill.core.events import run_event_uri
    from mangadistill.core.stage_io import loggable
    from mangadistill.intent.gate import EvalSetUris
    from mangadistill.intent.stages import run_intent_gate_check

    outcome = run_intent_gate_check(
        EvalSetUris(eval_set.path, eval_soft_labels.path, eval_member_votes.path),
        EvalSetUris(handwritten_set.path, handwritten_soft_labels.path, handwritten_member_votes.path),
        student.path, baseline.path, quantized.path, teacher_model, report.path, event.path, gates_uri=gates_uri,
        student_name=student_name, teacher_name=teacher_name,
        event_copy_uri=run_event_uri(run_id, run_events_root, pipeline_root),
    )
    for name, value in loggable(outcome.metrics).items():
        metrics.log_metric(name, value)
    confusion.log_confusion_matrix(outcome.labels, outcome.confusion)
    return (outcome.promote,)
