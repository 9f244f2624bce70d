import math
import re

import numpy as np
import pytest
import yaml

from mangadistill.core.gates import (
    Gate,
    GateConfigError,
    evaluate_gates,
    load_gates,
    packaged_gates_path,
    retained,
)

GATES_TEXT = """\
version: 1
gates:
  - metric: accuracy_retained
    op: ">="
    threshold: 0.98
    description: "student accuracy / teacher ensemble accuracy"
  - metric: ece
    op: "<="
    threshold: 0.1
"""


def test_load_gates_from_text():
    gates = load_gates(GATES_TEXT)
    assert gates == [
        Gate("accuracy_retained", ">=", 0.98, "student accuracy / teacher ensemble accuracy"),
        Gate("ece", "<=", 0.1, ""),
    ]


def test_load_gates_from_file(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text(GATES_TEXT)
    assert load_gates(str(path)) == load_gates(GATES_TEXT)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_gates(str(tmp_path / "nope.yaml"))


def test_packaged_intent_gates_load_and_cover_the_intent_metrics():
    gates = {gate.metric: gate for gate in load_gates(packaged_gates_path("intent"))}
    assert set(gates) == {
        "accuracy_retained",
        "macro_f1_retained",
        "rare_recall_vs_baseline_min",
        "ece",
        "latency_speedup_p50",
        "int8_size_ratio",
        "int8_accuracy_drop",
        "handwritten_accuracy_retained",
    }
    assert (gates["handwritten_accuracy_retained"].op, gates["handwritten_accuracy_retained"].threshold) == (">=", 0.98)
    assert (gates["accuracy_retained"].op, gates["accuracy_retained"].threshold) == (">=", 0.98)
    assert (gates["ece"].op, gates["ece"].threshold) == ("<=", 0.10)
    assert (gates["int8_size_ratio"].op, gates["int8_size_ratio"].threshold) == (">=", 3.5)
    assert all(gate.description for gate in gates.values())
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        packaged_gates_path("nonexistent")


def _gates_yaml(*entries: dict) -> str:
    return yaml.safe_dump({"version": 1, "gates": list(entries)}) + "\n"


GOOD = {"metric": "accuracy", "op": ">=", "threshold": 0.9}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\ngates: [\n", "not valid YAML"),
        ("- a\n- b\n", "top level"),
        ("version: 2\ngates: []\n", "unsupported version 2"),
        ("version: 1\ngates: []\n", "non-empty list"),
        ("version: 1\ngatez: []\n", "unknown top-level keys"),
        (_gates_yaml(GOOD, {"metric": "ece", "op": "=>", "threshold": 0.1}), r"gate #1 \(ece\): unknown op '=>'"),
        (_gates_yaml(GOOD, {"metric": "ece", "op": "<="}), r"gate #1 \(ece\): missing key\(s\) \['threshold'\]"),
        (_gates_yaml({"op": "<=", "threshold": 1}), r"gate #0: missing key\(s\) \['metric'\]"),
        (_gates_yaml({**GOOD, "treshold": 1}), r"gate #0 \(accuracy\): unknown key\(s\) \['treshold'\]"),
        (_gates_yaml({**GOOD, "threshold": "high"}), r"gate #0 \(accuracy\): 'threshold' must be a finite"),
        (_gates_yaml({**GOOD, "threshold": float("nan")}), "'threshold' must be a finite"),
        (_gates_yaml({**GOOD, "threshold": True}), "'threshold' must be a finite"),
        (_gates_yaml(GOOD, GOOD), r"gate #1 \(accuracy\): metric is gated twice"),
        ("version: 1\ngates:\n  - metric: ece\n    op: >=\n    threshold: 1\n", "(?s)ops must be quoted.*line 4"),
    ],
)
def test_bad_gates_yaml_names_the_source_and_the_gate(text, message):
    with pytest.raises(GateConfigError, match=message) as raised:
        load_gates(text)
    assert str(raised.value).startswith("<gates text>")


def test_bad_gates_file_error_names_the_file(tmp_path):
    path = tmp_path / "intent_gates.yaml"
    path.write_text(_gates_yaml(GOOD, {"metric": "ece", "op": "~", "threshold": 0.1}))
    with pytest.raises(GateConfigError, match=re.escape(f"{path}: gate #1 (ece): unknown op")):
        load_gates(str(path))


@pytest.mark.parametrize(
    ("op", "value", "passed"),
    [
        (">=", 0.5, True), (">=", 0.4999, False),
        ("<=", 0.5, True), ("<=", 0.5001, False),
        (">", 0.5001, True), (">", 0.5, False),
        ("<", 0.4999, True), ("<", 0.5, False),
        ("==", 0.5, True), ("==", 0.4, False),
    ],
)
def test_each_op_passes_and_fails(op, value, passed):
    decision = evaluate_gates([Gate("m", op, 0.5)], {"m": value})
    assert decision.results[0].passed is passed
    assert decision.promote is passed
    assert decision.results[0].value == value


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({}, "missing metric"),
        ({"m": None}, "missing metric"),
        ({"m": float("nan")}, "NaN metric"),
        ({"m": float("-inf")}, "infinite metric"),
        ({"m": "0.9"}, "non-numeric metric"),
    ],
)
def test_unusable_metric_fails_its_gate(metrics, reason):
    # "<=" with a huge threshold: a NaN or -inf comparison must not sneak through.
    decision = evaluate_gates([Gate("m", "<=", 1e300), Gate("other", ">=", 0)], {**metrics, "other": 1.0})
    assert decision.promote is False
    assert decision.results[0].passed is False
    assert decision.results[0].reason.startswith(reason)
    assert decision.results[1].passed is True
    assert [r.metric for r in decision.failed] == ["m"]


def test_nan_metric_keeps_its_value():
    result = evaluate_gates([Gate("m", ">=", 0)], {"m": float("nan")}).results[0]
    assert math.isnan(result.value)


def test_promote_needs_every_gate_and_at_least_one():
    gates = load_gates(GATES_TEXT)
    assert evaluate_gates(gates, {"accuracy_retained": 0.99, "ece": 0.05}).promote is True
    assert evaluate_gates(gates, {"accuracy_retained": 0.99, "ece": 0.15}).promote is False
    assert evaluate_gates([], {"accuracy_retained": 0.99}).promote is False


def test_reason_states_value_and_threshold():
    result = evaluate_gates([Gate("ece", "<=", 0.1)], {"ece": 0.125}).results[0]
    assert result.reason == "0.125 fails <= 0.1"


def test_numpy_scalars_are_metric_values():
    decision = evaluate_gates([Gate("m", ">=", 0.5)], {"m": np.float32(0.75)})
    assert decision.promote is True
    assert isinstance(decision.results[0].value, float)


def test_retained_is_nan_when_teacher_is_zero():
    assert retained(0.9, 0.95) == pytest.approx(0.9 / 0.95)
    assert math.isnan(retained(0.9, 0.0))
    assert math.isnan(retained(0.9, float("nan")))
