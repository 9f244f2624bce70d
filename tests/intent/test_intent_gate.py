"""The intent gate: teacher quality from what labeling recorded, students measured on human labels, on the generated
split and on the hand-written set (its ambiguous slice included)."""

import html
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError
from mangadistill.core.gates import evaluate_gates, load_gates, packaged_gates_path
from mangadistill.intent import metrics as m
from mangadistill.intent.ensemble import EnsembleConfig
from mangadistill.intent.gate import EvalSetUris, ScoredSet, ambiguous_metrics, run_intent_gate, student_errors
from mangadistill.intent.labeling import LabelingConfig
from mangadistill.intent.labels import INTENT_INDEX, INTENTS
from mangadistill.intent.stages import (
    run_handwritten_eval,
    run_quantization,
    run_soft_label_ensemble,
    run_teacher_labeling,
)
from mangadistill.sample_data.messages import build_sample_splits

K = len(INTENTS)


@pytest.fixture(scope="module")
def gate_inputs(tmp_path_factory, tiny_intent_classifier) -> dict[str, str]:
    root = tmp_path_factory.mktemp("gate")
    eval_table = build_sample_splits(seed=5, n_labelled=10, n_production=10, n_eval=160)["eval"]
    paths = {name: str(root / name) for name in ("eval.parquet", "votes", "soft", "int8", "report.html",
                                                 "hw.parquet", "hw-votes", "hw-soft")}
    storage.write_table(eval_table, paths["eval.parquet"])
    run_handwritten_eval("", paths["hw.parquet"], str(root / "hw-q"))  # the packaged hand-written set
    labeling = LabelingConfig(str(tiny_intent_classifier), adjudicator="none")
    for messages, votes, soft in (("eval.parquet", "votes", "soft"), ("hw.parquet", "hw-votes", "hw-soft")):
        run_teacher_labeling(paths[messages], paths[votes], str(root / f"{votes}-q"), labeling)
        run_soft_label_ensemble(paths[votes], paths[soft], str(root / f"{soft}.json"), str(root / f"{soft}-q"),
                                EnsembleConfig())
    paths["student"] = str(tiny_intent_classifier)  # the same untrained tiny model plays every part
    run_quantization(paths["student"], paths["int8"], paths["eval.parquet"])
    return paths


def _run(paths: dict[str, str], tmp_path: Path, teacher: str, votes: str | None = None, gates_uri: str = ""):
    return run_intent_gate(
        EvalSetUris(paths["eval.parquet"], paths["soft"], votes or paths["votes"]),
        EvalSetUris(paths["hw.parquet"], paths["hw-soft"], paths["hw-votes"]),
        paths["student"], paths["student"], paths["int8"], teacher, str(tmp_path / "report.html"),
        str(tmp_path / "event.json"), gates_uri=gates_uri,
    )


def _aligned(table: pa.Table, uri: str, column: str) -> np.ndarray:
    recorded = storage.read_table(uri)
    by_id = dict(zip(recorded.column("message_id").to_pylist(), recorded.column(column).to_pylist(), strict=True))
    return np.array([by_id[i] for i in table.column("message_id").to_pylist()])


def _labels(table: pa.Table) -> np.ndarray:
    return np.array([INTENT_INDEX[label] for label in table.column("label").to_pylist()])


def test_teacher_quality_comes_from_the_recorded_votes(gate_inputs, tiny_intent_classifier, tmp_path):
    outcome = _run(gate_inputs, tmp_path, str(tiny_intent_classifier))
    eval_table = storage.read_table(gate_inputs["eval.parquet"])
    probs = _aligned(eval_table, gate_inputs["votes"], "classifier_probs")
    y = _labels(eval_table)
    assert outcome.metrics["teacher_classifier_accuracy"] == pytest.approx(m.accuracy(y, probs.argmax(axis=1)))
    assert outcome.metrics["eval_rows"] == eval_table.num_rows
    # the baseline is the student itself here, so no rare class can be worse than it
    assert outcome.metrics["rare_recall_vs_baseline_min"] == 0.0
    assert outcome.metrics["teacher_classifier_latency_p50_ms"] > 0
    event = json.loads((tmp_path / "event.json").read_text())
    assert event["promote"] is outcome.promote is False  # untrained tiny models fail the accuracy gates
    assert "reliability" in (tmp_path / "report.html").read_text().lower()


def test_the_hand_written_set_is_measured_like_the_generated_split(gate_inputs, tiny_intent_classifier, tmp_path):
    outcome = _run(gate_inputs, tmp_path, str(tiny_intent_classifier))
    metrics = outcome.metrics
    hw = storage.read_table(gate_inputs["hw.parquet"])
    y = _labels(hw)
    ensemble = _aligned(hw, gate_inputs["hw-soft"], "soft_label")
    classifier = _aligned(hw, gate_inputs["hw-votes"], "classifier_probs")
    assert metrics["handwritten_rows"] == 104 and metrics["handwritten_quarantined_rows"] == 0
    assert metrics["handwritten_teacher_ensemble_accuracy"] == pytest.approx(m.accuracy(y, ensemble.argmax(axis=1)))
    assert metrics["handwritten_teacher_classifier_accuracy"] == pytest.approx(
        m.accuracy(y, classifier.argmax(axis=1)))
    expected = metrics["handwritten_student_accuracy"] / metrics["handwritten_teacher_ensemble_accuracy"]
    assert metrics["handwritten_accuracy_retained"] == pytest.approx(expected)
    for name in ("macro_f1_retained", "baseline_accuracy", "student_int8_accuracy", "rare_recall_vs_baseline_min",
                 "ece", "int8_accuracy_drop", "student_recall_escalation"):
        assert f"handwritten_{name}" in metrics, name
    # the ambiguous slice: the 27 rows with also_plausible, top 2 judged against {label, also_plausible}
    also = hw.column("also_plausible").to_pylist()
    rows = [i for i, alt in enumerate(also) if alt is not None]
    top2 = np.argsort(-ensemble[rows], axis=1, kind="stable")[:, :2]
    hits = [y[i] in top or INTENT_INDEX[also[i]] in top for i, top in zip(rows, top2, strict=True)]
    assert metrics["handwritten_ambiguous_rows"] == 27
    assert metrics["handwritten_ambiguous_teacher_ensemble_top2_accuracy"] == pytest.approx(np.mean(hits))
    nll = -np.mean(np.log(np.maximum(ensemble[rows, y[rows]], 1e-12)))
    assert metrics["handwritten_ambiguous_teacher_ensemble_nll"] == pytest.approx(nll, rel=1e-6)
    for model in ("student", "baseline"):
        for figure in ("accuracy", "top2_accuracy", "nll", "ece"):
            assert math.isfinite(metrics[f"handwritten_ambiguous_{model}_{figure}"])

    gates = {result.metric: result for result in outcome.decision.results}
    assert gates["handwritten_accuracy_retained"].value == pytest.approx(metrics["handwritten_accuracy_retained"])
    event = json.loads((tmp_path / "event.json").read_text())
    assert "handwritten_accuracy_retained" in event["gates"] and "handwritten_ambiguous_student_nll" in event

    report = (tmp_path / "report.html").read_text()
    for title in ("Quality on the generated eval split", "Quality on the hand-written set",
                  "Ambiguous messages (hand-written)"):
        assert title in report, title
    errors = report.split("<h2>Hand-written messages the student gets wrong")[1].split("</section>")[0]
    wrong = {html.escape(text) for text, label, p in zip(hw.column("text").to_pylist(), y, classifier, strict=True)
             if p.argmax() != label}
    assert 0 < errors.count("<tr>") - 1 <= 10  # minus the header row
    assert any(text in errors for text in wrong)


def _one_hot_ish(top: int, second: int, p_top: float = 0.6, p_second: float = 0.3) -> list[float]:
    rest = (1.0 - p_top - p_second) / (K - 2)
    return [p_top if k == top else p_second if k == second else rest for k in range(K)]


def test_ambiguous_top2_counts_also_plausible_and_nll_reads_the_human_label():
    rec, faq, order, ret = (INTENT_INDEX[name] for name in ("recommendation", "faq", "order_tracking",
                                                            "return_request"))
    table = pa.table({
        "message_id": ["a", "b", "c", "d"], "text": ["a", "b", "c", "d"],
        "label": ["recommendation", "recommendation", "recommendation", "order_tracking"],
        "also_plausible": ["faq", "faq", None, "return_request"],
    })
    y = np.array([rec, rec, rec, order])
    student = np.array([
        _one_hot_ish(faq, ret),       # label not in the top 2, also_plausible is: a top-2 hit
        _one_hot_ish(order, ret),     # neither: a miss
        _one_hot_ish(order, ret),     # unambiguous row: not in the slice at all
        _one_hot_ish(order, ret),     # label on top: a hit
    ])
    confident_wrong = 0.85 * np.eye(K)[ret] + 0.15 * np.eye(K)[order]  # p(label) = 0, top 2 = {ret, order}
    baseline = np.array([confident_wrong, np.eye(K)[rec], np.eye(K)[order], np.eye(K)[order]])
    scored = ScoredSet(table, y, {"student": student, "baseline": baseline, "teacher_ensemble": student}, 0)

    metrics = ambiguous_metrics(scored)

    assert metrics["ambiguous_rows"] == 3
    assert metrics["ambiguous_student_top2_accuracy"] == pytest.approx(2 / 3)
    assert metrics["ambiguous_student_accuracy"] == pytest.approx(1 / 3)
    rest = 0.1 / (K - 2)
    assert metrics["ambiguous_student_nll"] == pytest.approx(-(2 * math.log(rest) + math.log(0.6)) / 3)
    # a confident baseline that gives the label 0 pays the floored NLL (−ln 1e-12), the price of overconfidence
    assert metrics["ambiguous_baseline_top2_accuracy"] == pytest.approx(2 / 3)
    assert metrics["ambiguous_baseline_nll"] == pytest.approx(-math.log(1e-12) / 3)
    assert metrics["ambiguous_baseline_ece"] == pytest.approx(0.85 / 3)  # wrong at 0.85, right at 1.0 twice


def test_student_errors_are_the_most_confident_mistakes_with_text_and_both_predictions():
    n = 13
    table = pa.table({"message_id": [f"m{i}" for i in range(n)], "text": [f"text {i}" for i in range(n)],
                      "label": ["faq"] * n, "also_plausible": ["escalation"] + [None] * (n - 1)})
    faq, order = INTENT_INDEX["faq"], INTENT_INDEX["order_tracking"]
    student = np.array([_one_hot_ish(faq if i == 5 else order, faq, p_top=0.4 + 0.04 * i, p_second=0.1)
                        for i in range(n)])
    teacher = np.array([np.eye(K)[faq]] * n)
    scored = ScoredSet(table, np.full(n, faq), {"student": student, "teacher_ensemble": teacher}, 0)

    errors = student_errors(scored)

    assert len(errors) == 10  # 12 mistakes, the 10 most confident
    assert [row[0] for row in errors] == [f"text {i}" for i in (12, 11, 10, 9, 8, 7, 6, 4, 3, 2)]
    assert errors[0] == ["text 12", "faq", "", "order_tracking (0.88)", "faq"]
    assert student_errors(scored, limit=20)[-1][2] == "escalation"  # row 0, the least confident mistake


def test_a_set_without_ambiguous_rows_gives_nan_not_zero():
    table = pa.table({"message_id": ["a"], "text": ["a"], "label": ["faq"], "also_plausible": pa.nulls(1, pa.string())})
    probs = np.array([np.eye(K)[INTENT_INDEX["faq"]]])
    metrics = ambiguous_metrics(ScoredSet(table, np.array([INTENT_INDEX["faq"]]),
                                          {name: probs for name in ("student", "baseline", "teacher_ensemble")}, 0))
    assert metrics["ambiguous_rows"] == 0 and math.isnan(metrics["ambiguous_student_top2_accuracy"])


def _passing_metrics() -> dict[str, float]:
    """Every packaged intent gate exactly at its threshold (>= and <= pass at equality)."""
    return {gate.metric: gate.threshold for gate in load_gates(packaged_gates_path("intent"))}


@pytest.mark.parametrize("bad", ["nan", "missing"])
def test_a_nan_or_missing_handwritten_metric_fails_the_gate(bad):
    gates = load_gates(packaged_gates_path("intent"))
    metrics = _passing_metrics()
    assert metrics["handwritten_accuracy_retained"] == 0.98 and evaluate_gates(gates, metrics).promote
    if bad == "nan":
        metrics["handwritten_accuracy_retained"] = float("nan")
    else:
        del metrics["handwritten_accuracy_retained"]

    decision = evaluate_gates(gates, metrics)

    assert not decision.promote
    assert [(r.metric, r.reason) for r in decision.failed] == [
        ("handwritten_accuracy_retained", "NaN metric" if bad == "nan" else "missing metric")]


def test_a_student_worse_on_the_hand_written_set_only_is_refused():
    gates = load_gates(packaged_gates_path("intent"))
    metrics = {**_passing_metrics(), "accuracy_retained": 1.0, "handwritten_accuracy_retained": 0.95}
    decision = evaluate_gates(gates, metrics)
    assert not decision.promote and [r.metric for r in decision.failed] == ["handwritten_accuracy_retained"]


def test_eval_rows_missing_from_the_votes_are_a_clear_error(gate_inputs, tiny_intent_classifier, tmp_path):
    votes = storage.read_table(gate_inputs["votes"])
    partial = str(tmp_path / "partial-votes.parquet")
    storage.write_table(votes.slice(1), partial)
    with pytest.raises(DataContractError) as err:
        _run(gate_inputs, tmp_path, str(tiny_intent_classifier), votes=partial)
    first_id = votes.column("message_id")[0].as_py()
    assert partial in str(err.value) and first_id in str(err.value)
