"""Evaluate an intent student on the human-labelled split and decide whether it is promoted.

Everything is measured on human labels, never on teacher labels, so a student that copies teacher mistakes
cannot pass by agreeing with its teacher. The gated metrics (names used in the gates YAML):

- accuracy_retained = student accuracy / teacher-ensemble accuracy; macro_f1_retained likewise
- rare_recall_vs_baseline_min = min over RARE_INTENTS of (student recall − hard-label baseline recall)
- ece = the student's top-label expected calibration error (10 bins)
- latency_speedup_p50 = teacher classifier p50 / student p50 (PyTorch fp32, CPU, batch 1, one thread each)
- int8_size_ratio = fp32 ONNX size / int8 ONNX size; int8_accuracy_drop = student acc − int8 acc
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mangadistill.core import report as r
from mangadistill.core import storage
from mangadistill.core.benchmarking import measure_latency, path_size_mb, torch_threads
from mangadistill.core.contracts import DataContractError, validate_table
from mangadistill.core.events import distilled_model_eval, write_event
from mangadistill.core.gates import GateDecision, evaluate_gates, load_gates, packaged_gates_path, retained
from mangadistill.core.onnx_int8 import INT8_FILENAME, REPORT_FILENAME
from mangadistill.intent import metrics as m
from mangadistill.intent.classifier import TextClassifier
from mangadistill.intent.contracts import LABELLED_MESSAGES, MEMBER_VOTES, SOFT_LABELS
from mangadistill.intent.labels import INTENT_INDEX, INTENTS, RARE_INTENTS
from mangadistill.intent.quantization import OnnxTextClassifier

LATENCY_ITEMS = 100
LATENCY_THREADS = 1
RARE = [INTENT_INDEX[name] for name in RARE_INTENTS]


@dataclass
class GateOutcome:
    metrics: dict[str, float | None]
    labels: list[str]
    confusion: list[list[int]]
    decision: GateDecision
    event: dict

    @property
    def promote(self) -> bool:
        return self.decision.promote



def _weights_mb(model_dir: str) -> float:
    return sum(path_size_mb(str(p)) for p in Path(model_dir).glob("*.safetensors"))


def _aligned_teacher_probs(eval_table, uri: str, schema, column: str) -> np.ndarray:
    """A teacher output column (`soft_label` of SOFT_LABELS, `classifier_probs` of MEMBER_VOTES) in eval-table
    row order; every eval row must have one."""
    teacher = validate_table(storage.read_table(uri), schema, uri).table
    by_id = dict(zip(teacher.column("message_id").to_pylist(), teacher.column(column).to_pylist(), strict=True))
    ids = eval_table.column("message_id").to_pylist()
    missing = [i for i, message_id in enumerate(ids) if message_id not in by_id]
    if missing:
        raise DataContractError(uri, "message_id", None,
                                f"{len(missing)} eval messages have no teacher {column}, first {ids[missing[0]]!r}")
    return np.asarray([by_id[message_id] for message_id in ids], dtype=np.float64)


def _classification(prefix: str, probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = probs.argmax(axis=1)
    recall = m.per_class_recall(y, pred, len(INTENTS))
    out = {f"{prefix}_accuracy": m.accuracy(y, pred), f"{prefix}_macro_f1": m.macro_f1(y, pred, len(INTENTS)),
           f"{prefix}_ece": m.expected_calibration_error(probs, y)}
    out.update({f"{prefix}_recall_{name}": float(recall[k]) for k, name in enumerate(INTENTS)})
    return out


def evaluate_intent_student(
    eval_uri: str, eval_soft_labels_uri: str, eval_votes_uri: str, student_dir: str, baseline_dir: str,
    int8_dir: str, teacher_dir: str, latency_items: int = LATENCY_ITEMS,
) -> tuple[dict[str, float | None], dict]:
    """All metrics (see module docstring) and the raw material for the report's plots.

    The teacher's quality comes from what teacher labeling already recorded for the eval split (the ensemble's
    soft labels, the classifier's votes); the teacher model itself runs only for latency.
    """
    validated = validate_table(storage.read_table(eval_uri), LABELLED_MESSAGES, eval_uri)
    table = validated.table
    texts = table.column("text").to_pylist()
    y = np.array([INTENT_INDEX[label] for label in table.column("label").to_pylist()])
    student = TextClassifier(student_dir, INTENTS)
    teacher = TextClassifier(teacher_dir, INTENTS)
    int8 = OnnxTextClassifier(str(Path(int8_dir) / INT8_FILENAME), int8_dir, threads=LATENCY_THREADS)
    int8_order = [int8.labels.index(name) for name in INTENTS]
    probs = {
        "teacher_ensemble": _aligned_teacher_probs(table, eval_soft_labels_uri, SOFT_LABELS, "soft_label"),
        "teacher_classifier": _aligned_teacher_probs(table, eval_votes_uri, MEMBER_VOTES, "classifier_probs"),
        "student": student.predict_proba(texts, progress="student"),
        "student_int8": int8.predict_proba(texts)[:, int8_order],
        "baseline": TextClassifier(baseline_dir, INTENTS).predict_proba(texts, progress="hard-label baseline"),
    }

    metrics: dict[str, float | None] = {"eval_rows": float(len(texts)),
                                        "eval_quarantined_rows": float(validated.quarantine.num_rows)}
    for name, p in probs.items():
        metrics.update(_classification(name, p, y))
    metrics["accuracy_retained"] = retained(metrics["student_accuracy"], metrics["teacher_ensemble_accuracy"])
    metrics["macro_f1_retained"] = retained(metrics["student_macro_f1"], metrics["teacher_ensemble_macro_f1"])
    recall = {name: m.per_class_recall(y, p.argmax(axis=1), len(INTENTS)) for name, p in probs.items()}
    metrics["rare_recall_vs_baseline_min"] = m.min_recall_delta(recall["student"], recall["baseline"], RARE)
    metrics["ece"] = metrics["student_ece"]
    metrics["int8_accuracy_drop"] = metrics["student_accuracy"] - metrics["student_int8_accuracy"]

    sample = texts[:latency_items]
    runners = {
        "teacher_classifier": lambda batch: teacher.predict_proba(batch, batch_size=1),
        "student": lambda batch: student.predict_proba(batch, batch_size=1),
        "student_int8": lambda batch: int8.predict_proba(batch, batch_size=1),
    }
    for name, run in runners.items():
        with torch_threads(LATENCY_THREADS):
            timing = measure_latency(run, sample, batch_size=1, warmup=5, max_items=latency_items)
        metrics[f"{name}_latency_p50_ms"] = timing["p50_ms"]
        metrics[f"{name}_latency_p95_ms"] = timing["p95_ms"]
    metrics["latency_speedup_p50"] = (
        metrics["teacher_classifier_latency_p50_ms"] / metrics["student_latency_p50_ms"])
    metrics["int8_latency_speedup_p50"] = (
        metrics["teacher_classifier_latency_p50_ms"] / metrics["student_int8_latency_p50_ms"])
    # cost of serving on the same CPU is proportional to compute time per request
    metrics["cost_reduction"] = 1.0 - 1.0 / metrics["int8_latency_speedup_p50"]

    quant_report = json.loads((Path(int8_dir) / REPORT_FILENAME).read_text())
    metrics["teacher_size_mb"] = _weights_mb(teacher_dir)
    metrics["student_size_mb"] = _weights_mb(student_dir)
    metrics["student_int8_size_mb"] = path_size_mb(str(Path(int8_dir) / INT8_FILENAME))
    metrics["size_reduction"] = metrics["teacher_size_mb"] / metrics["student_size_mb"]
    metrics["int8_size_ratio"] = quant_report.get("size_ratio")
    plots = {"recall": recall, "probs": probs, "y": y}
    return metrics, plots


def run_intent_gate(
    eval_uri: str, eval_soft_labels_uri: str, eval_votes_uri: str, student_dir: str, baseline_dir: str, int8_dir: str,
    teacher_dir: str, report_uri: str, event_uri: str, gates_uri: str = "",
    student_name: str = "intent-student", teacher_name: str = "intent-teacher-ensemble",
) -> GateOutcome:
    """Measure, apply the gates (packaged intent gates when gates_uri is empty), write report and event."""
    gates = load_gates(gates_uri or packaged_gates_path("intent"))
    metrics, plots = evaluate_intent_student(
        eval_uri, eval_soft_labels_uri, eval_votes_uri, student_dir, baseline_dir, int8_dir, teacher_dir)
    decision = evaluate_gates(gates, metrics)
    event = distilled_model_eval(student_name, teacher_name, metrics, decision, gates_source=gates_uri or "packaged")
    write_event(event, event_uri)
    confusion = m.confusion_matrix(plots["y"], plots["probs"]["student"].argmax(axis=1), len(INTENTS))
    storage.write_text(report_uri, _report_html(metrics, plots, decision, confusion, student_name, teacher_name))
    return GateOutcome(metrics, list(INTENTS), confusion.tolist(), decision, event)


def _report_html(metrics, plots, decision, confusion, student_name: str, teacher_name: str) -> str:
    models = ("teacher_ensemble", "teacher_classifier", "student", "student_int8", "baseline")
    summary_rows = [
        [name.replace("_", " "), metrics[f"{name}_accuracy"], metrics[f"{name}_macro_f1"], metrics[f"{name}_ece"],
         *[metrics[f"{name}_recall_{rare}"] for rare in RARE_INTENTS]]
        for name in models
    ]
    speed_rows = [
        ["teacher classifier (PyTorch fp32)", metrics["teacher_classifier_latency_p50_ms"],
         metrics["teacher_classifier_latency_p95_ms"], metrics["teacher_size_mb"]],
        ["student (PyTorch fp32)", metrics["student_latency_p50_ms"], metrics["student_latency_p95_ms"],
         metrics["student_size_mb"]],
        ["student int8 (ONNX Runtime)", metrics["student_int8_latency_p50_ms"],
         metrics["student_int8_latency_p95_ms"], metrics["student_int8_size_mb"]],
    ]
    recall = plots["recall"]
    sections = [
        r.KeyValueSection("Run", {"student": student_name, "teacher": teacher_name,
                                  "evaluation rows (human-labelled)": metrics["eval_rows"],
                                  "evaluation rows quarantined": metrics["eval_quarantined_rows"]}),
        r.TableSection("Quality on the human-labelled split",
                       ["model", "accuracy", "macro-F1", "ECE", *[f"recall {x}" for x in RARE_INTENTS]],
                       summary_rows),
        r.FigureSection("Per-intent recall: teacher ensemble vs student vs hard-label baseline", r.grouped_bar_chart(
            list(INTENTS), {"teacher ensemble": recall["teacher_ensemble"], "student": recall["student"],
                            "hard-label baseline": recall["baseline"]},
            title="Recall per intent (rare intents last)", ylabel="recall")),
        r.FigureSection("Reliability diagram", r.reliability_diagram({
            name: m.reliability_bins(plots["probs"][key], plots["y"])
            for name, key in (("student", "student"), ("teacher ensemble", "teacher_ensemble"),
                              ("hard-label baseline", "baseline"))})),
        r.TableSection("CPU latency (batch 1) and size", ["model", "p50 ms", "p95 ms", "size MiB"], speed_rows),
        r.FigureSection("Student confusion matrix (rows: human label)", r.confusion_matrix_figure(
            confusion, list(INTENTS))),
    ]
    return r.render_html_report(f"Intent distillation: {student_name}", decision, sections)
