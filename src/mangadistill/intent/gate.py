"""Evaluate an intent student on two human-labelled sets and decide whether it is promoted.

Everything is measured on human labels, never on teacher labels, so a student that copies teacher mistakes
cannot pass by agreeing with its teacher. Two sets are measured the same way: the generated eval split (metric
names as below) and the hand-written set (the same names prefixed `handwritten_`), which no generator template
produced. The gated metrics (names used in the gates YAML):

- accuracy_retained = student accuracy / teacher-ensemble accuracy; macro_f1_retained likewise
- rare_recall_vs_baseline_min = min over the label set's rare intents (RARE_INTENTS for the built-in set) of
  (student recall − hard-label baseline recall); missing (so the gate fails) when the set has no rare intents
- ece = the student's top-label expected calibration error (10 bins)
- latency_speedup_p50 = teacher classifier p50 / student p50 (PyTorch fp32, CPU, batch 1, one thread each)
- int8_size_ratio = fp32 ONNX size / int8 ONNX size; int8_accuracy_drop = student acc − int8 acc

On the hand-written set's ambiguous slice (rows with `also_plausible`), for the student, the hard-label baseline
and the teacher ensemble, `handwritten_ambiguous_<model>_`: accuracy (top 1 = label), top2_accuracy (label or
also_plausible among the two most probable intents), nll = mean −ln p(label), ece; where soft labels should help.

The label set is the one the eval split's soft labels record (`labels.LabelSet`): the built-in intents unless
teacher labeling was given another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure

from mangadistill.core import report as r
from mangadistill.core import storage
from mangadistill.core.benchmarking import measure_latency, path_size_mb, torch_threads, weights_size_mb
from mangadistill.core.contracts import DataContractError, validate_table
from mangadistill.core.events import distilled_model_eval, write_event
from mangadistill.core.gates import GateDecision, GateOutcome, evaluate_gates, load_gates, packaged_gates_path, retained
from mangadistill.core.onnx_int8 import INT8_FILENAME, REPORT_FILENAME
from mangadistill.intent import metrics as m
from mangadistill.intent.classifier import TextClassifier
from mangadistill.intent.contracts import (
    HANDWRITTEN_MESSAGES,
    LABELLED_MESSAGES,
    MEMBER_VOTES,
    SOFT_LABELS,
    intent_contract,
    read_intent_table,
)
from mangadistill.intent.labels import BUILTIN_LABELS, LabelSet, label_set_from_metadata
from mangadistill.intent.quantization import OnnxTextClassifier

LATENCY_ITEMS = 100
LATENCY_THREADS = 1
HANDWRITTEN = "handwritten_"
"""Prefix of every metric measured on the hand-written set."""
MODELS = ("teacher_ensemble", "teacher_classifier", "student", "student_int8", "baseline")
AMBIGUOUS_MODELS = ("student", "baseline", "teacher_ensemble")
"""Compared on the ambiguous slice: does distilling soft labels keep the second plausible intent?"""
MAX_REPORTED_ERRORS = 10


@dataclass(frozen=True)
class EvalSetUris:
    """One evaluation set and what teacher labeling and the ensemble recorded for it: `messages`
    (LABELLED_MESSAGES; HANDWRITTEN_MESSAGES for the hand-written set), `soft_labels` (SOFT_LABELS) and
    `member_votes` (MEMBER_VOTES)."""

    messages: str
    soft_labels: str
    member_votes: str


@dataclass
class ScoredSet:
    """One evaluation set with every model's probabilities (rows in `table` order, columns in `labels` order)."""

    table: pa.Table
    y: np.ndarray
    probs: dict[str, np.ndarray]
    quarantined_rows: int
    labels: LabelSet = BUILTIN_LABELS

    @property
    def texts(self) -> list[str]:
        return self.table.column("text").to_pylist()

    def recall(self, model: str) -> np.ndarray:
        """Per-intent recall of `model` (NaN for an intent with no rows)."""
        return m.per_class_recall(self.y, self.probs[model].argmax(axis=1), len(self.labels.names))

    def also_plausible(self) -> list[int | None]:
        """The second plausible intent's index per row; all None for a set without the column."""
        if "also_plausible" not in self.table.column_names:
            return [None] * self.table.num_rows
        index = self.labels.index
        return [None if name is None else index[name] for name in self.table.column("also_plausible").to_pylist()]


@dataclass
class IntentGateOutcome(GateOutcome):
    """The gate's outcome plus the student's confusion matrix on the generated eval split (rows: human label)."""

    labels: list[str]
    confusion: list[list[int]]


def _aligned_teacher_probs(eval_table: pa.Table, uri: str, schema: pa.Schema, column: str,
                           labels: LabelSet) -> np.ndarray:
    """A teacher output column (`soft_label` of SOFT_LABELS, `classifier_probs` of MEMBER_VOTES) in eval-table
    row order; every eval row must have one."""
    teacher = read_intent_table(uri, schema, labels=labels)[0].table
    by_id = dict(zip(teacher.column("message_id").to_pylist(), teacher.column(column).to_pylist(), strict=True))
    ids = eval_table.column("message_id").to_pylist()
    missing = [i for i, message_id in enumerate(ids) if message_id not in by_id]
    if missing:
        raise DataContractError(uri, "message_id", None,
                                f"{len(missing)} eval messages have no teacher {column}, first {ids[missing[0]]!r}")
    return np.asarray([by_id[message_id] for message_id in ids], dtype=np.float64)


class _Students:
    """The three models the gate runs itself on every evaluation text: student, its int8 export, the baseline."""

    def __init__(self, student_dir: str, baseline_dir: str, int8_dir: str, labels: LabelSet = BUILTIN_LABELS):
        self.labels = labels
        self.student = TextClassifier(student_dir, labels.names)
        self.baseline = TextClassifier(baseline_dir, labels.names)
        self.int8 = OnnxTextClassifier(str(Path(int8_dir) / INT8_FILENAME), int8_dir, threads=LATENCY_THREADS)
        self.int8_order = [self.int8.labels.index(name) for name in labels.names]

    def score(self, uris: EvalSetUris, schema: pa.Schema, name: str) -> ScoredSet:
        """Validate the set against `schema`, align the teacher's recorded outputs, run the three models."""
        validated = validate_table(storage.read_table(uris.messages), intent_contract(schema, self.labels),
                                   uris.messages)
        table = validated.table
        texts = table.column("text").to_pylist()
        probs = {
            "teacher_ensemble": _aligned_teacher_probs(table, uris.soft_labels, SOFT_LABELS, "soft_label",
                                                       self.labels),
            "teacher_classifier": _aligned_teacher_probs(table, uris.member_votes, MEMBER_VOTES, "classifier_probs",
                                                         self.labels),
            "student": self.student.predict_proba(texts, progress=f"student ({name})"),
            "student_int8": self.int8.predict_proba(texts)[:, self.int8_order],
            "baseline": self.baseline.predict_proba(texts, progress=f"hard-label baseline ({name})"),
        }
        index = self.labels.index
        y = np.array([index[label] for label in table.column("label").to_pylist()])
        return ScoredSet(table, y, probs, validated.quarantine.num_rows, self.labels)


def quality_metrics(scored: ScoredSet) -> dict[str, float]:
    """Per model: accuracy, macro-F1, ECE, recall per intent; then the gated ratios and deltas (module docstring)."""
    metrics: dict[str, float] = {}
    for name, p in scored.probs.items():
        pred = p.argmax(axis=1)
        metrics[f"{name}_accuracy"] = m.accuracy(scored.y, pred)
        metrics[f"{name}_macro_f1"] = m.macro_f1(scored.y, pred, len(scored.labels.names))
        metrics[f"{name}_ece"] = m.expected_calibration_error(p, scored.y)
        metrics.update({f"{name}_recall_{intent}": float(value)
                        for intent, value in zip(scored.labels.names, scored.recall(name), strict=True)})
    metrics["accuracy_retained"] = retained(metrics["student_accuracy"], metrics["teacher_ensemble_accuracy"])
    metrics["macro_f1_retained"] = retained(metrics["student_macro_f1"], metrics["teacher_ensemble_macro_f1"])
    rare = [scored.labels.index[name] for name in scored.labels.rare]
    metrics["rare_recall_vs_baseline_min"] = (
        m.min_recall_delta(scored.recall("student"), scored.recall("baseline"), rare) if rare else None)
    metrics["ece"] = metrics["student_ece"]
    metrics["int8_accuracy_drop"] = metrics["student_accuracy"] - metrics["student_int8_accuracy"]
    return metrics


def ambiguous_metrics(scored: ScoredSet) -> dict[str, float]:
    """On rows with a second plausible intent A_i = {label_i, also_plausible_i}, per AMBIGUOUS_MODELS:
    ambiguous_<model>_accuracy (argmax = label), _top2_accuracy (top 2 ∩ A_i ≠ ∅), _nll (mean −ln p(label)),
    _ece; ambiguous_rows counts the slice. NaN for every figure when the slice is empty."""
    second = scored.also_plausible()
    rows = [i for i, alt in enumerate(second) if alt is not None]
    metrics: dict[str, float] = {"ambiguous_rows": float(len(rows))}
    y = scored.y[rows]
    acceptable = [[int(scored.y[i]), second[i]] for i in rows]
    for name in AMBIGUOUS_MODELS:
        key = f"ambiguous_{name}_"
        if not rows:
            metrics.update({f"{key}{figure}": float("nan") for figure in ("accuracy", "top2_accuracy", "nll", "ece")})
            continue
        p = scored.probs[name][rows]
        metrics[f"{key}accuracy"] = m.accuracy(y, p.argmax(axis=1))
        metrics[f"{key}top2_accuracy"] = m.top_k_accuracy(p, acceptable, k=2)
        metrics[f"{key}nll"] = m.negative_log_likelihood(p, y)
        metrics[f"{key}ece"] = m.expected_calibration_error(p, y)
    return metrics


def evaluate_intent_student(
    generated: EvalSetUris, handwritten: EvalSetUris, student_dir: str, baseline_dir: str, int8_dir: str,
    teacher_dir: str, latency_items: int = LATENCY_ITEMS,
) -> tuple[dict[str, float | None], dict[str, ScoredSet]]:
    """All metrics (see module docstring) and the two scored sets (for the report).

    The teacher's quality comes from what teacher labeling already recorded for each set (the ensemble's soft
    labels, the classifier's votes); the teacher model itself runs only for latency.
    """
    labels = label_set_from_metadata(storage.read_table(generated.soft_labels).schema.metadata, generated.soft_labels)
    students = _Students(student_dir, baseline_dir, int8_dir, labels)
    sets = {"generated": students.score(generated, LABELLED_MESSAGES, "generated"),
            "handwritten": students.score(handwritten, HANDWRITTEN_MESSAGES, "hand-written")}
    metrics: dict[str, float | None] = {
        "eval_rows": float(sets["generated"].table.num_rows),
        "eval_quarantined_rows": float(sets["generated"].quarantined_rows),
        **quality_metrics(sets["generated"]),
        f"{HANDWRITTEN}rows": float(sets["handwritten"].table.num_rows),
        f"{HANDWRITTEN}quarantined_rows": float(sets["handwritten"].quarantined_rows),
    }
    for name, value in {**quality_metrics(sets["handwritten"]), **ambiguous_metrics(sets["handwritten"])}.items():
        metrics[f"{HANDWRITTEN}{name}"] = value
    metrics.update(_speed_and_size(sets["generated"].texts[:latency_items], students, student_dir, int8_dir,
                                   teacher_dir))
    return metrics, sets


def _speed_and_size(sample: list[str], students: _Students, student_dir: str, int8_dir: str,
                    teacher_dir: str) -> dict[str, float | None]:
    """CPU latency at batch 1 on one thread (p50, p95), the speed-ups, and the model sizes."""
    teacher = TextClassifier(teacher_dir, students.labels.names)
    runners = {
        "teacher_classifier": lambda batch: teacher.predict_proba(batch, batch_size=1),
        "student": lambda batch: students.student.predict_proba(batch, batch_size=1),
        "student_int8": lambda batch: students.int8.predict_proba(batch, batch_size=1),
    }
    metrics: dict[str, float | None] = {}
    for name, run in runners.items():
        with torch_threads(LATENCY_THREADS):
            timing = measure_latency(run, sample, batch_size=1, warmup=5, max_items=len(sample))
        metrics[f"{name}_latency_p50_ms"] = timing["p50_ms"]
        metrics[f"{name}_latency_p95_ms"] = timing["p95_ms"]
    metrics["latency_speedup_p50"] = metrics["teacher_classifier_latency_p50_ms"] / metrics["student_latency_p50_ms"]
    metrics["int8_latency_speedup_p50"] = (
        metrics["teacher_classifier_latency_p50_ms"] / metrics["student_int8_latency_p50_ms"])
    # cost of serving on the same CPU is proportional to compute time per request
    metrics["cost_reduction"] = 1.0 - 1.0 / metrics["int8_latency_speedup_p50"]

    quant_report = json.loads((Path(int8_dir) / REPORT_FILENAME).read_text())
    metrics["teacher_size_mb"] = weights_size_mb(teacher_dir)
    metrics["student_size_mb"] = weights_size_mb(student_dir)
    metrics["student_int8_size_mb"] = path_size_mb(str(Path(int8_dir) / INT8_FILENAME))
    metrics["size_reduction"] = metrics["teacher_size_mb"] / metrics["student_size_mb"]
    metrics["int8_size_ratio"] = quant_report.get("size_ratio")
    return metrics


def run_intent_gate(
    generated: EvalSetUris, handwritten: EvalSetUris, student_dir: str, baseline_dir: str, int8_dir: str,
    teacher_dir: str, report_uri: str, event_uri: str, gates_uri: str = "",
    student_name: str = "intent-student", teacher_name: str = "intent-teacher-ensemble",
) -> IntentGateOutcome:
    """Measure both sets, apply the gates (packaged intent gates when gates_uri is empty), write report and event.
    The returned confusion matrix is the student's on the generated split."""
    gates = load_gates(gates_uri or packaged_gates_path("intent"))
    metrics, sets = evaluate_intent_student(generated, handwritten, student_dir, baseline_dir, int8_dir, teacher_dir)
    decision = evaluate_gates(gates, metrics)
    event = distilled_model_eval(student_name, teacher_name, metrics, decision, gates_source=gates_uri or "packaged")
    write_event(event, event_uri)
    confusion = _confusion(sets["generated"])
    storage.write_text(report_uri, _report_html(metrics, sets, decision, student_name, teacher_name))
    return IntentGateOutcome(metrics, decision, event, labels=list(sets["generated"].labels.names),
                             confusion=confusion.tolist())


def _confusion(scored: ScoredSet) -> np.ndarray:
    return m.confusion_matrix(scored.y, scored.probs["student"].argmax(axis=1), len(scored.labels.names))


def student_errors(scored: ScoredSet, limit: int = MAX_REPORTED_ERRORS) -> list[list[object]]:
    """Up to `limit` rows the student gets wrong, most confident first: text, human label, also plausible,
    student prediction (its probability), teacher-ensemble prediction."""
    student, teacher = scored.probs["student"], scored.probs["teacher_ensemble"]
    wrong = np.flatnonzero(student.argmax(axis=1) != scored.y)
    wrong = wrong[np.argsort(-student[wrong].max(axis=1), kind="stable")][:limit]
    texts, second, names = scored.texts, scored.also_plausible(), scored.labels.names
    return [[texts[i], names[scored.y[i]], "" if second[i] is None else names[second[i]],
             f"{names[student[i].argmax()]} ({student[i].max():.2f})", names[teacher[i].argmax()]]
            for i in wrong]


def _quality_table(title: str, metrics: dict, prefix: str, labels: LabelSet) -> r.TableSection:
    return r.TableSection(
        title, ["model", "accuracy", "macro-F1", "ECE", *[f"recall {x}" for x in labels.rare]],
        [[name.replace("_", " "), metrics[f"{prefix}{name}_accuracy"], metrics[f"{prefix}{name}_macro_f1"],
          metrics[f"{prefix}{name}_ece"], *[metrics[f"{prefix}{name}_recall_{rare}"] for rare in labels.rare]]
         for name in MODELS])


def _report_html(metrics: dict, sets: dict[str, ScoredSet], decision: GateDecision, student_name: str,
                 teacher_name: str) -> str:
    speed_rows = [
        ["teacher classifier (PyTorch fp32)", metrics["teacher_classifier_latency_p50_ms"],
         metrics["teacher_classifier_latency_p95_ms"], metrics["teacher_size_mb"]],
        ["student (PyTorch fp32)", metrics["student_latency_p50_ms"], metrics["student_latency_p95_ms"],
         metrics["student_size_mb"]],
        ["student int8 (ONNX Runtime)", metrics["student_int8_latency_p50_ms"],
         metrics["student_int8_latency_p95_ms"], metrics["student_int8_size_mb"]],
    ]
    h = HANDWRITTEN
    ambiguous_rows = [
        [label, metrics[f"{h}ambiguous_rows"], metrics[f"{h}ambiguous_{name}_accuracy"],
         metrics[f"{h}ambiguous_{name}_top2_accuracy"], metrics[f"{h}ambiguous_{name}_nll"],
         metrics[f"{h}ambiguous_{name}_ece"]]
        for name, label in (("student", "student"), ("baseline", "hard-label baseline"),
                            ("teacher_ensemble", "teacher ensemble"))
    ]
    generated, handwritten = sets["generated"], sets["handwritten"]
    sections = [
        r.KeyValueSection("Run", {
            "student": student_name, "teacher": teacher_name,
            "generated eval rows (human-labelled)": metrics["eval_rows"],
            "generated eval rows quarantined": metrics["eval_quarantined_rows"],
            "hand-written rows": metrics[f"{h}rows"], "hand-written rows quarantined": metrics[f"{h}quarantined_rows"],
            "hand-written ambiguous rows (with also_plausible)": metrics[f"{h}ambiguous_rows"],
            "accuracy retained: generated / hand-written":
                f"{r.format_value(metrics['accuracy_retained'])} / {r.format_value(metrics[f'{h}accuracy_retained'])}",
            "macro-F1 retained: generated / hand-written":
                f"{r.format_value(metrics['macro_f1_retained'])} / {r.format_value(metrics[f'{h}macro_f1_retained'])}",
        }),
        _quality_table("Quality on the generated eval split (human labels)", metrics, "", generated.labels),
        _quality_table("Quality on the hand-written set (written by a person, never trained on)", metrics, h,
                       generated.labels),
        r.TableSection(
            "Ambiguous messages (hand-written)",
            ["model", "rows", "accuracy (label)", "top-2 accuracy (label or also plausible)", "NLL of human label",
             "ECE"], ambiguous_rows),
        r.TableSection(
            f"Hand-written messages the student gets wrong (up to {MAX_REPORTED_ERRORS}, most confident first)",
            ["message", "human label", "also plausible", "student prediction (p)", "teacher-ensemble prediction"],
            student_errors(handwritten)),
        r.FigureSection("Per-intent recall on the generated split", _recall_chart(generated)),
        r.FigureSection("Per-intent recall on the hand-written set", _recall_chart(handwritten)),
        r.FigureSection("Reliability diagram (generated split)", r.reliability_diagram({
            label: m.reliability_bins(generated.probs[key], generated.y)
            for label, key in (("student", "student"), ("teacher ensemble", "teacher_ensemble"),
                               ("hard-label baseline", "baseline"))})),
        r.TableSection("CPU latency (batch 1) and size", ["model", "p50 ms", "p95 ms", "size MiB"], speed_rows),
        r.FigureSection("Student confusion matrix, generated split (rows: human label)", r.confusion_matrix_figure(
            _confusion(generated), list(generated.labels.names))),
        r.FigureSection("Student confusion matrix, hand-written set (rows: human label)", r.confusion_matrix_figure(
            _confusion(handwritten), list(handwritten.labels.names))),
    ]
    return r.render_html_report(f"Intent distillation: {student_name}", decision, sections)


def _recall_chart(scored: ScoredSet) -> Figure:
    return r.grouped_bar_chart(
        list(scored.labels.names),
        {"teacher ensemble": scored.recall("teacher_ensemble"), "student": scored.recall("student"),
         "hard-label baseline": scored.recall("baseline")},
        title="Recall per intent", ylabel="recall")
