"""KFP component: evaluate the response student on the fixed human-reviewed set and decide promotion."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("gate-check"), install_kfp_package=False)
def response_gate_check(
    eval_set: Input[Dataset],
    eval_teacher_answers: Input[Dataset],
    student: Input[Model],
    quantized: Input[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
    event: Output[Artifact],
    review_packet: Output[Dataset],
    review_key: Output[Dataset],
    eval_answers: Output[Dataset],
    base_student_model: str = "",
    served_variant: str = "baseline",
    student_hardware: str = "",
    teacher_model: str = "",
    teacher_base_url: str = "",
    teacher_hardware: str = "",
    cost_prompts: int = 3,
    cost_max_new_tokens: int = 32,
    cost_repeats: int = 3,
    judge_base_url: str = "",
    judge_model: str = "",
    judge_guided_choice: bool = False,
    judge_structured_api: str = "structured_outputs",
    judge_calibration_uri: str = "",
    judge_calibration_pairs: int = 0,
    judge_cache_uri: str = "",
    proxy_model: str = "minilm-l6",
    completed_reviews_uri: str = "",
    gates_uri: str = "",
    max_new_tokens: int = 128,
    catalog_uri: str = "",
    student_name: str = "response-student",
    teacher_name: str = "response-teacher",
    run_events_root: str = "",
    pipeline_root: str = "",
    run_id: str = "",
) -> NamedTuple("GateOutputs", [("promote", bool)]):
    """Measures the student against its teacher and the base student on the fixed human-reviewed set; applies
    the response gates (teacher preference match, human win rate, hallucination rate, cost reduction, no slice
    regression).

    Args:
        eval_set: The fixed human-reviewed set (`response_eval`: policy, escalation, factuality and general
            slices).
        eval_teacher_answers: The teacher's answers to the eval prompts (`teacher_responses`, prompt_id =
            eval_id, from response_teacher_labeling), with their recorded cost.
        student: The distilled student: the response_distillation_training output (with `merged/`).
        quantized: The student's bitsandbytes folders, from response_quantization.
        base_student_model: The untrained student (builtin name, folder, gs://) the human win rate and the slice
            no-regression gates compare against; empty: the model the student was trained from.
        served_variant: `baseline`, `int8` or `nf4`: the student variant measured and priced.
        student_hardware: The machine of resources/serving_hardware.yaml whose hourly price prices the student's
            throughput measured in this task; empty: the cost gate fails as unknown.
        teacher_model: The teacher (builtin name, folder or gs:// prefix), measured in this task when
            teacher_hardware is set.
        teacher_base_url: The teacher's OpenAI-compatible API, if it has one: its recorded usage cost per answer
            is the teacher's side and it is not measured (teacher_hardware must then be empty).
        teacher_hardware: For a self-hosted teacher priced 0 per token: the machine whose hourly price prices
            its throughput, measured in this task side by side with the student's. Empty: the teacher's recorded
            usage cost (a managed API).
        cost_prompts: Eval prompts (the first ones) both models generate on for the cost measurement.
        cost_max_new_tokens: New tokens per prompt in the cost measurement (exactly that many).
        cost_repeats: Rounds of the cost measurement after one warm-up each: teacher and student in turn; the
            median prices each, the spread is reported.
        judge_base_url: An OpenAI-compatible judge API for teacher preference match (both orders; key from
            TEACHER_API_KEY). Empty: the judge is judge_model served in the task, or, without one, only the
            labelled similarity proxy is measured.
        judge_model: The judge API's model name; without judge_base_url, a local instruct model (builtin name,
            folder or gs:// prefix) served in the task and asked with guided choice.
        judge_guided_choice: Ask the judge API for exactly one of the three verdicts (vLLM's choice constraint,
            sent as judge_structured_api says); only for a server that supports it. Always on for a local judge.
        judge_structured_api: How the constraint is sent: `structured_outputs` (vLLM >= 0.12:
            `{"structured_outputs": {"choice": [...]}}`) or `guided` (older vLLM: `{"guided_choice": [...]}`).
        judge_calibration_uri: Hand-judged answer pairs (JSONL: pair_id, prompt, answer_a, answer_b, preferred
            a/b/tie) the judge is checked on before it is trusted; empty: the packaged 47
            (resources/HANDWRITTEN_RESPONSE.md).
        judge_calibration_pairs: How many of them to use (0: all).
        judge_cache_uri: Where the judge's verdicts are kept, by content (local folder or gs:// prefix): the same
            question (judge model, rendered messages, decoding settings) is never asked twice, so every run's
            calibration pairs and a rerun on the same answers cost no judge call. Empty: none.
        proxy_model: Sentence encoder of the offline proxy when there is no judge; empty: none.
        completed_reviews_uri: Completed blinded reviews of an earlier run's review_packet; empty: the human
            win rate is "awaiting human review" and the student is not promoted.
        gates_uri: Gates YAML; empty for the packaged response gates.
        max_new_tokens: Answer length cap for the student and the base student.
        catalog_uri: Catalog JSONL of the fact checker; empty for the packaged sample.
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
        report: HTML report with the gate table, the judge's verdicts, slice scores, the cost table measured
            side by side and failure modes.
        event: The `distilled_model_eval` JSON event.
        review_packet: The blinded A/B packet (student vs base student) for human reviewers.
        review_key: The packet's unblinding key, to keep away from reviewers.
        eval_answers: A folder with student.parquet, base_student.parquet (`model_answers`) and
            judgments.parquet.
        promote: True only when every gate passes; a missing or NaN metric fails its gate.
    """
    from mangadistill.core.events import run_event_uri
    from mangadistill.core.stage_io import loggable
    from mangadistill.response.gate import ResponseGateConfig
    from mangadistill.response.stages import run_response_gate_check

    config = ResponseGateConfig(
        base_student_model=base_student_model, max_new_tokens=max_new_tokens, served_variant=served_variant,
        judge_base_url=judge_base_url, judge_model=judge_model, judge_guided_choice=judge_guided_choice,
        judge_structured_api=judge_structured_api, judge_calibration_uri=judge_calibration_uri,
        judge_calibration_pairs=judge_calibration_pairs, judge_cache_uri=judge_cache_uri,
        proxy_model=proxy_model, student_hardware=student_hardware, teacher_model=teacher_model,
        teacher_base_url=teacher_base_url, teacher_hardware=teacher_hardware, cost_prompts=cost_prompts,
        cost_max_new_tokens=cost_max_new_tokens, cost_repeats=cost_repeats, gates_uri=gates_uri,
        completed_reviews_uri=completed_reviews_uri, student_name=student_name,
        teacher_name=teacher_name,
    )
    outcome = run_response_gate_check(
        eval_set.path, eval_teacher_answers.path, student.path, quantized.path, report.path, event.path,
        review_packet.path, review_key.path, eval_answers.path, config, catalog_uri=catalog_uri,
        event_copy_uri=run_event_uri(run_id, run_events_root, pipeline_root),
    )
    for name, value in loggable(outcome.metrics).items():
        metrics.log_metric(name, value)
    return (outcome.promote,)
