"""Promotion gates: thresholds on named metrics, loaded from YAML, evaluated into a promote decision.

Gates YAML format::

    version: 1
    gates:
      - metric: accuracy_retained      # name of a metric in the metrics dict
        op: ">="                        # one of >=, <=, >, <, == (quote it: a bare > starts a YAML block)
        threshold: 0.98                 # a finite number
        description: "student accuracy / teacher ensemble accuracy"   # optional

Each metric appears at most once, and a file has at least one gate; unknown keys are errors (a typo such
as `treshold` must not silently drop a gate). `evaluate_gates` fails a gate whose metric is missing, None,
NaN or infinite, and promotes only when there is at least one gate and every gate passes.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
SUPPORTED_VERSION = 1
_REQUIRED_KEYS = ("metric", "op", "threshold")
_ALLOWED_KEYS = {*_REQUIRED_KEYS, "description"}


class GateConfigError(ValueError):
    """A gates file that cannot be used; the message names the file and the gate index."""


@dataclass(frozen=True)
class Gate:
    """One threshold: passes when `value <op> threshold`."""

    metric: str
    op: str
    threshold: float
    description: str = ""


@dataclass(frozen=True)
class GateResult:
    """How one gate fared: `value` is None when the metric was missing."""

    metric: str
    op: str
    threshold: float
    value: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateDecision:
    """promote = at least one gate and every gate passed."""

    promote: bool
    results: list[GateResult] = field(default_factory=list)

    @property
    def failed(self) -> list[GateResult]:
        """The gates that did not pass, in file order."""
        return [result for result in self.results if not result.passed]


def packaged_gates_path(pipeline: str) -> str:
    """Path of the gates file shipped in `mangadistill.resources` for `pipeline` (e.g. "intent")."""
    path = Path(str(resources.files("mangadistill.resources") / f"{pipeline}_gates.yaml"))
    if not path.is_file():
        raise FileNotFoundError(f"no packaged gates file for pipeline {pipeline!r}: {path}")
    return str(path)


def load_gates(source: str | Path) -> list[Gate]:
    """Gates from a YAML file (local path or gs:// URI) or from YAML text.

    A string that contains a newline is YAML text; anything else is a location read through
    `mangadistill.core.storage.read_text`. Raises `GateConfigError` naming the file and the gate index.
    """
    if isinstance(source, str) and "\n" in source:
        name, text = "<gates text>", source
    else:
        from mangadistill.core.storage import read_text

        name = str(source)
        text = read_text(name)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise GateConfigError(f"{name}: not valid YAML (ops must be quoted: op: \">=\"): {error}") from error
    if not isinstance(document, Mapping):
        raise GateConfigError(f"{name}: expected a mapping with 'version' and 'gates' at the top level")
    unknown = set(document) - {"version", "gates"}
    if unknown:
        raise GateConfigError(f"{name}: unknown top-level keys {sorted(map(str, unknown))}")
    if document.get("version") != SUPPORTED_VERSION:
        raise GateConfigError(
            f"{name}: unsupported version {document.get('version')!r}; expected {SUPPORTED_VERSION}"
        )
    entries = document.get("gates")
    if not isinstance(entries, list) or not entries:
        raise GateConfigError(f"{name}: 'gates' must be a non-empty list")
    gates = [_parse_gate(entry, f"{name}: gate #{index}") for index, entry in enumerate(entries)]
    _check_unique(gates, name)
    return gates


def _parse_gate(entry: object, where: str) -> Gate:
    """One gate mapping, checked; `where` prefixes every error ("file: gate #i")."""
    if not isinstance(entry, Mapping):
        raise GateConfigError(f"{where}: expected a mapping with keys {list(_REQUIRED_KEYS)}, got {entry!r}")
    metric = entry.get("metric")
    if metric is not None:
        where = f"{where} ({metric})"
    missing = [key for key in _REQUIRED_KEYS if key not in entry]
    if missing:
        raise GateConfigError(f"{where}: missing key(s) {missing}")
    unknown = set(entry) - _ALLOWED_KEYS
    if unknown:
        raise GateConfigError(f"{where}: unknown key(s) {sorted(map(str, unknown))}")
    if not isinstance(metric, str) or not metric:
        raise GateConfigError(f"{where}: 'metric' must be a non-empty string, got {metric!r}")
    op = entry["op"]
    if op not in OPS:
        raise GateConfigError(f"{where}: unknown op {op!r}; expected one of {list(OPS)} (quoted)")
    threshold = entry["threshold"]
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not math.isfinite(threshold)
    ):
        raise GateConfigError(f"{where}: 'threshold' must be a finite number, got {threshold!r}")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise GateConfigError(f"{where}: 'description' must be a string, got {description!r}")
    return Gate(metric=metric, op=op, threshold=float(threshold), description=description)


def _check_unique(gates: Iterable[Gate], name: str) -> None:
    """Each metric gated at most once (events and reports key gates by metric)."""
    seen: set[str] = set()
    for index, gate in enumerate(gates):
        if gate.metric in seen:
            raise GateConfigError(f"{name}: gate #{index} ({gate.metric}): metric is gated twice")
        seen.add(gate.metric)


def evaluate_gates(gates: Iterable[Gate], metrics: Mapping[str, float | None]) -> GateDecision:
    """Check each gate against `metrics[gate.metric]`; missing/None/NaN/inf values fail their gate."""
    gates = list(gates)
    _check_unique(gates, "<gates>")
    results = [_evaluate_gate(gate, metrics) for gate in gates]
    return GateDecision(promote=bool(results) and all(r.passed for r in results), results=results)


def _evaluate_gate(gate: Gate, metrics: Mapping[str, float | None]) -> GateResult:
    if gate.op not in OPS:
        raise GateConfigError(f"gate {gate.metric}: unknown op {gate.op!r}; expected one of {list(OPS)}")
    raw = metrics.get(gate.metric)

    def result(value: float | None, passed: bool, reason: str) -> GateResult:
        return GateResult(gate.metric, gate.op, gate.threshold, value, passed, reason)

    if raw is None:
        return result(None, False, "missing metric")
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real):
        return result(None, False, f"non-numeric metric: {raw!r}")
    value = float(raw)
    if math.isnan(value):
        return result(value, False, "NaN metric")
    if math.isinf(value):
        return result(value, False, "infinite metric")
    passed = OPS[gate.op](value, gate.threshold)
    verdict = "meets" if passed else "fails"
    return result(value, passed, f"{value:.4g} {verdict} {gate.op} {gate.threshold:g}")


def retained(student_value: float, teacher_value: float) -> float:
    """student / teacher (e.g. accuracy retained); NaN when the teacher's value is 0 or not finite."""
    if not math.isfinite(teacher_value) or teacher_value == 0:
        return float("nan")
    return float(student_value / teacher_value)


@dataclass
class GateOutcome:
    """What a gate check returns: every metric, the decision and the event it wrote."""

    metrics: dict[str, float | None]
    decision: GateDecision
    event: dict

    @property
    def promote(self) -> bool:
        return self.decision.promote
