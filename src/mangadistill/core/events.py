"""The `distilled_model_eval` production log event (the source document's "Production Log").

Shape, one flat JSON object::

    {"event": "distilled_model_eval", "student": "...", "teacher": "...",
     <one key per metric>, <extra fields>,
     "thresholds": {metric: {"op": ">=", "threshold": 0.98}},
     "gates": {metric: true}, "promote": false, "timestamp": "2026-01-31T12:00:00Z"}

Values are JSON-safe: NaN and ±inf become null, numpy scalars and arrays become Python numbers and lists.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mangadistill.core.gates import GateDecision

EVENT_NAME = "distilled_model_eval"
_RESERVED_KEYS = ("event", "student", "teacher", "thresholds", "gates", "promote", "timestamp")


def json_safe(value: Any, path: str = "event") -> Any:
    """`value` with NaN/inf → None, numpy → Python, tuples → lists; TypeError naming the key otherwise."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist(), path)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise TypeError(f"{path}: {type(value).__name__} is not JSON-serialisable")


def distilled_model_eval(
    student: str,
    teacher: str,
    metrics: Mapping[str, float | None],
    decision: GateDecision,
    *,
    timestamp: datetime | None = None,
    include_timestamp: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """The event for one evaluated student; `fields` (run id, pipeline, ...) go after the metrics.

    `timestamp` defaults to now; it must be timezone-aware and is written in UTC with a "Z" suffix.
    include_timestamp=False leaves the "timestamp" key out (an event with exactly the source document's keys plus the
    thresholds and the decision, for a log that stamps its records itself).
    A metric or field that reuses a reserved key, or a field that repeats a metric, is a ValueError.
    """
    reserved = set(_RESERVED_KEYS)
    clashes = sorted((set(metrics) & reserved) | (set(fields) & (reserved | set(metrics))))
    if clashes:
        raise ValueError(f"{EVENT_NAME}: keys {clashes} clash with reserved event keys or with metric names")
    moment = timestamp or datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError(f"{EVENT_NAME}: timestamp {moment.isoformat()} has no timezone")
    event: dict[str, Any] = {"event": EVENT_NAME, "student": student, "teacher": teacher}
    event.update(metrics)
    event.update(fields)
    event["thresholds"] = {r.metric: {"op": r.op, "threshold": r.threshold} for r in decision.results}
    event["gates"] = {r.metric: r.passed for r in decision.results}
    event["promote"] = decision.promote
    if include_timestamp:
        event["timestamp"] = moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return json_safe(event)


def event_json(event: Mapping[str, Any]) -> str:
    """One JSON line (strict: NaN is refused, so call it on `distilled_model_eval` output)."""
    return json.dumps(event, allow_nan=False, ensure_ascii=False)


def write_event(event: Mapping[str, Any], uri: str) -> None:
    """Write the event as one JSON line to a local path or gs:// URI."""
    from mangadistill.core.storage import write_text

    write_text(uri, event_json(event) + "\n")
