"""bench/bench_support.py: the target check every bench script applies to its measured figures."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bench_support import machine_facts, passes


@pytest.mark.parametrize(("value", "op", "target", "met"), [
    (0.98, ">=", 0.98, True), (0.979, ">=", 0.98, False), (0.0, ">", 0.0, False), (0.1, ">", 0.0, True),
    (0.04, "<=", 0.04, True), (0.05, "<=", 0.04, False), (None, ">=", 0.0, False), (float("nan"), ">=", 0.0, False),
    (300, "<=", 300.0, True),
])
def test_passes_applies_the_operator_and_never_passes_a_missing_or_nan_value(value, op, target, met):
    assert passes(value, op, target) is met


def test_an_unknown_operator_is_an_error():
    with pytest.raises(KeyError):
        passes(1.0, "==", 1.0)


def test_machine_facts_name_the_cpu_budget_of_a_result():
    facts = machine_facts()
    assert facts["cpus"] >= 1 and facts["torch_threads"] >= 1 and facts["load_average_1m"] >= 0
