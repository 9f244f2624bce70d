"""KFP component: evaluate a student on the held-out split and decide promotion (intent, reranker, response)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("gate-check"), install_kfp_package=False)
def gate_check(
    eval_set: Input[Dataset],
    student: Input[Model],
    quantized: Input[Model],
    teacher_model: str,
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
    event: Output[Artifact],
    review_packet: Output[Dataset],
    review_key: Output[Dataset],
    eval_answers: Output[Dataset],
    eval_soft_labels: Input[Dataset] = None,
    eval_member_votes: Input[Dataset] = None,
    baseline: Input[Model] = None,
    eval_teacher_answers: Input[Dataset] = None,
    gates_uri: str = "",
    student_name: str = "intent-student",
    teacher_name: str = "intent-teacher-ensemble",
    task: str = "intent",
    latency_queries: int = 10,
    max_length: int = 128,
    base_student_model: str = "",
    served_variant: str = "baseline",
    student_hardware: str = "",
    teacher_hardware: str = "",
    judge_base_url: str = "",
    judge_model: str = "",
    judge_guided_choice: bool = False,
    proxy_model: str = "minilm-l6",
    completed_reviews_uri: str = "",
    max_new_tokens: int = 128,
    catalog_uri: str = "",
) -> NamedTuple("GateOutputs", [("promote", bool)]):
    """Measures the student against its teacher and a baseline on the held-out split; applies the gates.

    Args:
        eval_set: intent: the human-labelled split (`labelled_messages` contract); reranker: the held-out judged
            queries' candidates (`rerank_candidates`, every row with a relevance); response: the fixed
            human-reviewed set (`response_eval`: policy, escalation and factuality slices).
        student: The distilled student (transformers folder; response: the training output with `merged/`).
        quantized: The student's int8 folder, from quantization (response: its bitsandbytes folder and report).
        teacher_model: intent: the teacher classifier (run only for latency and size against the student);
            reranker: the teacher cross-encoder (ranking quality, latency, size); response: a name only (the
            teacher's answers come in eval_teacher_answers).
        eval_soft_labels: intent only (required there): the teacher ensemble's soft labels for the eval messages.
        eval_member_votes: intent only (required there): the members' votes for the same messages (the teacher
            classifier's accuracy).
        baseline: intent only (required there): the hard-label-only student trained the same way (β = 1).
            The reranker's baseline is the BM25 order of the candidates.
        eval_teacher_answers: response only (required there): the teacher's answers to the eval prompts
            (`teacher_responses`, prompt_id = eval_id, from teacher_labeling), with their recorded cost.
        gates_uri: Gates YAML; empty for the task's packaged gates.
        student_name: Name recorded in the event.
        teacher_name: Name recorded in the event.
        task: `intent`, `reranker` or `response`.
        latency_queries: reranker only: queries timed (each one forward pass over its first 50 candidates).
        max_length: reranker only: token limit of query + candidate text for every model.
        base_student_model: response only: the untrained student (builtin name, folder, gs://) the human win rate
            and the slice no-regression gates compare against.
        served_variant: response only: `baseline`, `int8` or `nf4`: the variant whose measured throughput
            (from quantization) prices the student.
        student_hardware: response only: the machine of resources/serving_hardware.yaml that quantization ran
            on (its hourly price); empty: the cost gate fails as unknown.
        teacher_hardware: response only: for a self-hosted teacher priced 0 per token, the machine it labelled
            on: its throughput is measured from its answers and priced at that machine's rate. Empty: the
            teacher's recorded usage cost (a managed API).
        judge_base_url: response only: an OpenAI-compatible judge API for teacher preference match (both
            orders; key from TEACHER_API_KEY). Empty: the judge is judge_model served in the task, or, without
            one, only the labelled similarity proxy is measured.
        judge_model: response only: the judge API's model name; without judge_base_url, a local instruct model
            (builtin name, folder or gs:// prefix) served in the task and asked with guided choice.
        judge_guided_choice: response only: ask the judge API with vLLM's guided_choice extension (the answer
            is one of the three verdicts); only for a server that supports it. Always on for a local judge.
        proxy_model: response only: sentence encoder of the offline proxy when there is no judge; empty: none.
        completed_reviews_uri: response only: completed blinded reviews of an earlier run's review_packet;
            empty: the human win rate is "awaiting human review" and the student is not promoted.
        max_new_tokens: response only: answer length cap for the student and the base student.
        catalog_uri: response only: catalog JSONL of the fact checker; empty for the packaged sample.

    Returns:
        metrics: Every gated and reported figure.
        confusion: intent: the student's confusion matrix (reranker: left empty).
        report: HTML report with the gate table and plots.
        event: The `distilled_model_eval` JSON event.
        review_packet: response: the blinded A/B packet (student vs base student) for human reviewers
            (others: empty).
        review_key: response: the packet's unblinding key, to keep away from reviewers (others: empty).
        eval_answers: response: a folder with student.parquet, base_student.parquet (`model_answers`) and
            judgments.parquet (others: an empty student.parquet).
        promote: True only when every gate passes; a missing or NaN metric fails its gate.
    """
    from mangadistill.intent.stages import gate_check_stage, loggable

    outcome = gate_check_stage(
        task, eval_set.path, student.path, quantized.path, teacher_model, report.path, event.path,
        eval_soft_labels_uri=eval_soft_labels.path if eval_soft_labels else "",
        eval_votes_uri=eval_member_votes.path if eval_member_votes else "",
        baseline_dir=baseline.path if baseline else "", gates_uri=gates_uri, student_name=student_name,
        teacher_name=teacher_name, latency_queries=latency_queries, max_length=max_length,
        teacher_answers_uri=eval_teacher_answers.path if eval_teacher_answers else "",
        review_packet_uri=review_packet.path, review_key_uri=review_key.path, answers_dir=eval_answers.path,
        response_options=dict(
            base_student_model=base_student_model, served_variant=served_variant, student_hardware=student_hardware,
            teacher_hardware=teacher_hardware, judge_base_url=judge_base_url, judge_model=judge_model,
            judge_guided_choice=judge_guided_choice, proxy_model=proxy_model,
            completed_reviews_uri=completed_reviews_uri, max_new_tokens=max_new_tokens, catalog_uri=catalog_uri,
        ),
    )
    for name, value in loggable(outcome.metrics).items():
        metrics.log_metric(name, value)
    if task == "intent":
        confusion.log_confusion_matrix(outcome.labels, outcome.confusion)
    return (outcome.promote,)
