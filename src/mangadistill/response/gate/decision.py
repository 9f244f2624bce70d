"""The response gate: the eval answers, every metric, the gates, the blinded review packet, the report and
the event (`run_response_gate`; the metrics are defined in the package docstring)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from mangadistill.core import storage
from mangadistill.core.chat_api import DEFAULT_API_KEY_ENV, ChatCallFailed
from mangadistill.core.contracts import DataContractError, quarantine_table, validate_table
from mangadistill.core.events import distilled_model_eval, write_event
from mangadistill.core.gates import Gate, GateDecision, GateOutcome, evaluate_gates, load_gates, packaged_gates_path
from mangadistill.response import factcheck
from mangadistill.response.contracts import (
    JUDGMENTS,
    MODEL_ANSWERS,
    RESPONSE_EVAL,
    RESPONSE_EVAL_SLICES,
    TEACHER_RESPONSES,
)
from mangadistill.response.gate.calibration import calibrate_judge, judge_trusted, load_judge_calibration
from mangadistill.response.gate.cost import ServingHardware, SideBySideThroughput, serving_cost
from mangadistill.response.gate.diagnostics import (
    Diagnostic,
    DiagnosticThresholds,
    copied_findings,
    diagnose,
    final_train_loss,
)
from mangadistill.response.gate.judge import (
    PROXY_METRIC,
    PROXY_SIMILARITY_THRESHOLD,
    ChatBackend,
    judge_preference,
    load_judge_prompt,
    similarity_proxy_match,
)
from mangadistill.response.gate.report import report_html
from mangadistill.response.gate.review import HumanReviewResult, build_review_packet, score_human_reviews
from mangadistill.response.gate.slices import slice_check, slice_scores

EVENT_METRICS = ("human_win_rate", "hallucination_rate", "cost_reduction")
"""The metrics of the `distilled_model_eval` event, in its order."""
EVENT_COST_FIELDS = ("cost_teacher_tokens_per_s_median", "cost_student_tokens_per_s_median", "cost_repeats",
                     "cost_reduction_spread")
"""The side-by-side cost measurement's figures the event carries after its metrics."""


@dataclass(frozen=True)
class ResponseGateConfig:
    """What the response gate check is told, built once by its caller (the component).

    Answering (the stage): base_student_model, the untrained student ("": the model the student was trained from);
    max_new_tokens and system_prompt of every eval answer. Judging: judge_base_url and judge_model of an OpenAI-
    compatible judge API (its key in the environment variable judge_api_key_env), or judge_model alone, a local
    model served in the task; judge_guided_choice asks for one of JUDGE_CHOICES, sent as judge_structured_api
    says (chat_api.STRUCTURED_APIS: "structured_outputs" for vLLM >= 0.12, "guided" for older servers);
    judge_prompt_uri ("": packaged); judge_calibration_uri, the hand-judged pairs the judge is checked on first ("":
    packaged; `calibration`), judge_calibration_pairs of them (0: all); judge_cache_uri, where verdicts are kept
    (`judge.CachedJudge`; "": none, every verdict is asked); proxy_model, the sentence encoder of the
    offline proxy measured when there is no judge ("": none). Cost, measured side by side in the task
    (`cost.measure_side_by_side`): the student's served_variant ("baseline", "int8", "nf4") and, with
    teacher_hardware, the self-hosted teacher_model (its teacher_base_url must then be empty), each priced at its
    machine (student_hardware, teacher_hardware) of the hardware price table hardware_uri ("": packaged); without
    teacher_hardware the teacher (a managed API at teacher_base_url) costs its recorded usage. cost_prompts (the
    first eval prompts), cost_max_new_tokens (new tokens per prompt) and cost_repeats (rounds) size the measurement.
    Decision: gates_uri ("": packaged), completed_reviews_uri ("": awaiting human review), the packet's review_seed,
    the diagnostic thresholds and the names the event records.
    """

    base_student_model: str = ""
    max_new_tokens: int = 128
    system_prompt: str | None = None
    served_variant: str = "baseline"
    judge_base_url: str = ""
    judge_model: str = ""
    judge_api_key_env: str = DEFAULT_API_KEY_ENV
    judge_guided_choice: bool = False
    judge_structured_api: str = "structured_outputs"
    judge_prompt_uri: str = ""
    judge_calibration_uri: str = ""
    judge_calibration_pairs: int = 0
    judge_cache_uri: str = ""
    proxy_model: str = ""
    student_hardware: str = ""
    teacher_model: str = ""
    teacher_base_url: str = ""
    teacher_hardware: str = ""
    hardware_uri: str = ""
    cost_prompts: int = 3
    cost_max_new_tokens: int = 32
    cost_repeats: int = 3
    gates_uri: str = ""
    completed_reviews_uri: str = ""
    review_seed: int = 0
    diagnostic_thresholds: DiagnosticThresholds = field(default_factory=DiagnosticThresholds)
    student_name: str = "response-student"
    teacher_name: str = "response-teacher"


def answer_eval_prompts(
    backend: ChatBackend, eval_rows: Sequence[Mapping[str, Any]], system_prompt: str | None = None,
    max_tokens: int = 256,
) -> tuple[pa.Table, pa.Table]:
    """(MODEL_ANSWERS, QUARANTINE): `backend`'s answer to each eval prompt, asked the way the student was
    trained (`training.chat_messages`), greedy; all at once through `backend.complete_many` when the backend
    batches (LocalChatModel), else one `complete` at a time. A prompt left unanswered (an empty reply, or a
    request that failed after retries) gets an empty answer, which fails every check that needs one, and a
    quarantine row with the reason: the gate measures a model that does not answer instead of stopping on it."""
    from mangadistill.response.training import chat_messages

    conversations = [chat_messages(row["prompt"], system_prompt) for row in eval_rows]
    complete_many = getattr(backend, "complete_many", None)
    if complete_many is not None:
        results = complete_many(conversations, max_tokens=max_tokens)
    else:
        results = []
        for row, messages in zip(eval_rows, conversations, strict=True):
            try:
                results.append(backend.complete(messages, temperature=0.0, max_tokens=max_tokens,
                                                label=f"answer {row['eval_id']}"))
            except ChatCallFailed as failure:
                results.append(failure)
    answers, bad = [], []
    for index, (row, result) in enumerate(zip(eval_rows, results, strict=True)):
        if isinstance(result, ChatCallFailed):
            bad.append({"source": backend.model, "row": index, "message_id": row["eval_id"], "column": "prompt",
                        "reason": f"no answer: {result.reason}", "value": row["prompt"][:200]})
            answers.append({"eval_id": row["eval_id"], "response": "",
                            "completion_tokens": result.usage.get("completion_tokens", 0)})
        else:
            answers.append({"eval_id": row["eval_id"], "response": result.content,
                            "completion_tokens": result.completion_tokens})
    return pa.Table.from_pylist(answers, schema=MODEL_ANSWERS), quarantine_table(bad)


def _aligned(eval_ids: Sequence[str], uri: str, schema: pa.Schema, id_column: str) -> list[dict]:
    """Rows of the table at `uri` in eval order; every eval_id must have exactly one row."""
    table = validate_table(storage.read_table(uri), schema, uri, on_bad_rows="fail").table
    by_id = {row[id_column]: row for row in table.to_pylist()}
    missing = [eval_id for eval_id in eval_ids if eval_id not in by_id]
    if missing:
        raise DataContractError(uri, id_column, None,
                                f"{len(missing)} of {len(eval_ids)} eval prompts have no answer, first {missing[0]!r}")
    return [by_id[eval_id] for eval_id in eval_ids]


@dataclass
class ResponseGateOutcome(GateOutcome):
    """The gate's outcome plus the failure-mode diagnostics, the judge's verdicts and the human review."""

    diagnostics: list[Diagnostic]
    judgments: pa.Table
    review: HumanReviewResult


def explain_failures(decision: GateDecision, explanations: Mapping[str, str]) -> GateDecision:
    """The decision with `explanations[metric]` appended to the reason of each gate that failed on a missing
    or NaN value (e.g. human_win_rate: "awaiting human review ...")."""
    results = [
        replace(result, reason=f"{result.reason}: {explanations[result.metric]}")
        if not result.passed and result.metric in explanations
        and (result.value is None or not math.isfinite(result.value)) else result
        for result in decision.results
    ]
    return GateDecision(decision.promote, results)


def evaluate_response_student(
    eval_uri: str, student_answers_uri: str, base_answers_uri: str, teacher_answers_uri: str,
    catalog: factcheck.Catalog, config: ResponseGateConfig, judge: ChatBackend | None = None,
    throughput: SideBySideThroughput | None = None, training_report_uri: str = "", gates: Sequence[Gate] = (),
) -> tuple[dict[str, float | None], dict[str, Any]]:
    """All metrics but the human win rate (the package docstring), and details for the report and the
    packet. With a judge, it is first checked on the hand-judged pairs; while a gate in `gates` on a
    judge_calibration_* metric fails, teacher_preference_match is withheld (teacher_preference_match_untrusted
    keeps the figure) and explained as "judge unreliable: κ=..."."""
    validated = validate_table(storage.read_table(eval_uri), RESPONSE_EVAL, eval_uri)  # the contract checks slices
    rows = validated.table.to_pylist()
    ids = [row["eval_id"] for row in rows]
    answers = {
        "student": _aligned(ids, student_answers_uri, MODEL_ANSWERS, "eval_id"),
        "base_student": _aligned(ids, base_answers_uri, MODEL_ANSWERS, "eval_id"),
        "teacher": _aligned(ids, teacher_answers_uri, TEACHER_RESPONSES, "prompt_id"),
    }
    texts = {name: [row["response"] for row in model_rows] for name, model_rows in answers.items()}
    metrics: dict[str, float | None] = {"eval_rows": float(len(rows)),
                                        "eval_quarantined_rows": float(validated.quarantine.num_rows)}
    explanations: dict[str, str] = {}

    index = factcheck.as_catalog_index(catalog)
    facts, slices = {}, {}
    for name, model_texts in texts.items():
        table, summary = factcheck.check_responses(model_texts, index, ids)
        facts[name] = table.to_pylist()
        prefix = "" if name == "student" else f"{name.replace('_student', '')}_"
        metrics[f"{prefix}hallucination_rate"] = summary["hallucination_rate"]
        metrics[f"{prefix}unanswered_prompts"] = float(sum(not text.strip() for text in model_texts))
        passed = [slice_check(row, text, fact) for row, text, fact in zip(rows, model_texts, facts[name],
                                                                           strict=True)]
        slices[name] = slice_scores(rows, passed)
        for slice_name, score in slices[name].items():
            metrics[f"{prefix}slice_{slice_name}_score"] = score
    for slice_name in RESPONSE_EVAL_SLICES:
        metrics[f"slice_{slice_name}_vs_base"] = slices["student"][slice_name] - slices["base_student"][slice_name]
        metrics[f"slice_{slice_name}_rows"] = float(sum(row["slice"] == slice_name for row in rows))
    copied, total = copied_findings([f["findings"] for f in facts["student"]],
                                    [f["findings"] for f in facts["teacher"]])
    metrics.update(student_findings=float(total), student_findings_copied=float(copied),
                   student_findings_copied_share=copied / total if total else float("nan"))

    preference = calibration = None
    if judge is not None:
        judge_prompt = load_judge_prompt(config.judge_prompt_uri or None)
        pairs = load_judge_calibration(config.judge_calibration_uri)
        calibration = calibrate_judge(judge, pairs[:config.judge_calibration_pairs or None], judge_prompt,
                                      guided_choice=config.judge_guided_choice)
        metrics.update(calibration.metrics())
        preference = judge_preference(judge, ids, [row["prompt"] for row in rows], texts["teacher"],
                                      texts["student"], judge_prompt, guided_choice=config.judge_guided_choice)
        metrics.update(preference.metrics())
        trusted, why = judge_trusted(gates, metrics)
        if not trusted:
            metrics["teacher_preference_match_untrusted"] = metrics.pop("teacher_preference_match")
            metrics["teacher_preference_match"] = None
            explanations["teacher_preference_match"] = why
    else:
        metrics["teacher_preference_match"] = None
        if config.proxy_model:
            metrics[PROXY_METRIC], _ = similarity_proxy_match(texts["student"], texts["teacher"],
                                                              config.proxy_model)
            explanations["teacher_preference_match"] = (
                f"no judge API was given; only the offline proxy {PROXY_METRIC} (embedding cosine >= "
                f"{PROXY_SIMILARITY_THRESHOLD:g}, {config.proxy_model}) was measured, and this gates file does not "
                "accept it")
        else:
            explanations["teacher_preference_match"] = "no judge API was given"

    hardware = ServingHardware.load(config.hardware_uri or None)
    student_tokens = [row["completion_tokens"] for row in answers["student"] if row["completion_tokens"]]
    teacher_measured = throughput is not None and "teacher" in throughput.tokens_per_second
    metrics.update(
        student_mean_response_tokens=float(np.mean(student_tokens)) if student_tokens else None,
        teacher_mean_response_tokens=float(np.mean([row["completion_tokens"] for row in answers["teacher"]])),
        teacher_mean_recorded_cost_usd=float(np.mean([row["cost_usd"] for row in answers["teacher"]])),
        student_usd_per_hour=hardware.price(config.student_hardware) if config.student_hardware else None,
        teacher_usd_per_hour=hardware.price(config.teacher_hardware) if teacher_measured and config.teacher_hardware
        else None)
    metrics.update(serving_cost(throughput, metrics["student_usd_per_hour"], metrics["teacher_usd_per_hour"],
                                metrics["student_mean_response_tokens"], metrics["teacher_mean_response_tokens"],
                                [row["cost_usd"] for row in answers["teacher"]]))
    if metrics["student_cost_per_1k_usd"] is None:
        explanations["cost_reduction"] = (
            "student cost unknown: needs its tokens per second measured in this task (finite), its serving "
            "hardware and completion_tokens of its answers")
    elif teacher_measured and metrics["teacher_cost_per_1k_usd"] is None:
        explanations["cost_reduction"] = ("teacher cost unknown: needs its tokens per second measured in this task "
                                          "(finite) and its serving hardware (teacher_hardware)")
    elif not teacher_measured and not metrics["teacher_cost_per_1k_usd"] > 0:
        explanations["cost_reduction"] = ("the teacher's recorded usage cost is 0 (a self-hosted teacher priced 0 "
                                          "per token): give teacher_hardware so it is measured side by side")
    where = f" at {config.teacher_base_url}" if config.teacher_base_url else ""
    teacher_basis = (f"measured side by side on {throughput.device}, priced as {config.teacher_hardware}"
                     if teacher_measured else f"recorded usage cost per call (managed API{where}); not measured here")

    metrics["final_train_loss"] = (final_train_loss(json.loads(storage.read_text(training_report_uri)))
                                   if training_report_uri else None)
    details = {"rows": rows, "texts": texts, "slices": slices, "preference": preference, "calibration": calibration,
               "judge_guided_choice": config.judge_guided_choice,
               "explanations": explanations, "teacher_cost_basis": teacher_basis, "throughput": throughput,
               "hardware_version": hardware.version, "student_hardware": config.student_hardware}
    return metrics, details


def run_response_gate(
    eval_uri: str, student_answers_uri: str, base_answers_uri: str, teacher_answers_uri: str,
    report_uri: str, event_uri: str, review_packet_uri: str, review_key_uri: str,
    catalog: factcheck.Catalog, config: ResponseGateConfig = ResponseGateConfig(),
    judge: ChatBackend | None = None, judgments_uri: str = "", throughput: SideBySideThroughput | None = None,
    training_report_uri: str = "",
) -> ResponseGateOutcome:
    """Measure, export the blinded review packet and its key, score completed reviews when given, apply the
    gates (the packaged response gates when config.gates_uri is empty), write the report and the event.

    catalog: the records the fact checker checks claims against. judge: the pairwise judge (None: only the
    proxy config.proxy_model, when set, is measured). throughput: the served student's and, for a self-hosted
    teacher (priced with config.teacher_hardware), the teacher's tokens per second measured side by side
    (`cost.measure_side_by_side`; None: not measured, the cost gate fails); training_report_uri: the
    student's training_report.json (its final loss). The event has the keys event, student, teacher,
    human_win_rate, hallucination_rate, cost_reduction, then EVENT_COST_FIELDS, thresholds, gates and promote
    (the decision); no timestamp.
    """
    gates = load_gates(config.gates_uri or packaged_gates_path("response"))
    metrics, details = evaluate_response_student(
        eval_uri, student_answers_uri, base_answers_uri, teacher_answers_uri, catalog, config, judge, throughput,
        training_report_uri, gates)
    packet, key = build_review_packet(details["rows"], details["texts"]["student"], details["texts"]["base_student"],
                                      config.review_seed)
    storage.write_table(packet, review_packet_uri)
    storage.write_table(key, review_key_uri)
    review = score_human_reviews(config.completed_reviews_uri, key)
    metrics.update(human_win_rate=review.win_rate, human_review_packets=float(review.packets),
                   human_reviews=float(review.reviews), human_reviews_quarantined=float(review.quarantine.num_rows))
    metrics.update({f"human_win_rate_{name}": rate for name, rate in review.win_rate_by_slice.items()})
    packet_note = f"blinded packet of {review.packets} pairs: {review_packet_uri}"
    explanations = {**details["explanations"], "human_win_rate": f"{review.status} ({packet_note})"}
    decision = explain_failures(evaluate_gates(gates, metrics), explanations)
    event = distilled_model_eval(config.student_name, config.teacher_name,
                                 {name: metrics[name] for name in EVENT_METRICS}, decision, include_timestamp=False,
                                 **{name: metrics[name] for name in EVENT_COST_FIELDS})
    write_event(event, event_uri)
    preference = details["preference"]
    judgments = pa.Table.from_pylist(preference.judgments if preference else [], schema=JUDGMENTS)
    if judgments_uri:
        storage.write_table(judgments, judgments_uri)
    diagnostics = diagnose(metrics, decision, config.diagnostic_thresholds)
    storage.write_text(report_uri, report_html(metrics, details, decision, diagnostics, review, config.student_name,
                                               config.teacher_name, judge))
    return ResponseGateOutcome(metrics, decision, event, diagnostics, judgments, review)
