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
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

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


# --- the run's last word: one JSON log line for any outcome (the pipelines' exit handler) --------------------

RUN_FAILED_EVENT = "distilled_model_run_failed"
RUN_SUCCEEDED_EVENT = "distilled_model_run_succeeded"
"""A run that succeeded but whose gate event the exit task could not read (the reason is in "error")."""
SUCCEEDED = "SUCCEEDED"
GATE_EVENT_FILE = "distilled_model_eval.json"


def run_event_uri(run_id: str, run_events_root: str = "", pipeline_root: str = "") -> str:
    """`<run_events_root>/<run_id>/distilled_model_eval.json`, where the gate copies its event and the exit task
    reads it; run_events_root defaults to `<pipeline_root>/events`. "" when the run id or both roots are missing.

    The parts come apart because a KFP cluster fills in a placeholder only when it is the whole value: the run id
    (`{{$.pipeline_job_uuid}}`) always, the pipeline root (`{{$.pipeline_root}}`) on Vertex AI and kfp.local
    only; a root still holding a placeholder is refused later by `storage.usable_folder`."""
    root = run_events_root or (f"{pipeline_root.rstrip('/')}/events" if pipeline_root else "")
    if not run_id or not root:
        return ""
    return f"{root.rstrip('/')}/{run_id}/{GATE_EVENT_FILE}"


def copy_event(event_uri: str, copy_uri: str) -> bool:
    """Copy the gate's event file to `copy_uri` (`run_event_uri`: where the exit handler reads it); an empty
    `copy_uri`, an unresolved KFP placeholder or a scheme storage does not write (minio://) is skipped with a
    warning. True when the copy was written."""
    from mangadistill.core.storage import read_text, usable_folder, write_text

    if not copy_uri or not usable_folder(copy_uri, "the run event's copy for the exit handler"):
        return False
    write_text(copy_uri, read_text(event_uri))
    return True


def run_outcome_event(
    pipeline: str,
    run_id: str,
    state: str,
    gate_event_uri: str = "",
    failed_task: str = "",
    error: str = "",
    *,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """The event a run ends with, whatever its outcome.

    state SUCCEEDED and a readable gate event at `gate_event_uri`: that event (`distilled_model_eval`), with
    "pipeline" and "run_id" added when it has none. Otherwise {"event", "pipeline", "run_id", "state",
    "failed_task", "error", "timestamp"} with event `distilled_model_run_failed` for any other state, or
    `distilled_model_run_succeeded` for a run that succeeded but whose gate event cannot be read (why, in
    "error"). `run_id` and `failed_task` may be "" (not known); the timestamp is UTC with a "Z" suffix.
    """
    from mangadistill.core.storage import read_text

    moment = (timestamp or datetime.now(UTC)).astimezone(UTC)
    name = RUN_FAILED_EVENT
    if state == SUCCEEDED:
        name = RUN_SUCCEEDED_EVENT
        try:
            if not gate_event_uri:
                raise ValueError("no location given (set the pipeline's run_events_root)")
            event = json.loads(read_text(gate_event_uri))
            if not isinstance(event, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            error = f"the gate event is unreadable: {gate_event_uri or '(none)'}: {exc}"
        else:
            event.setdefault("pipeline", pipeline)
            event.setdefault("run_id", run_id)
            return json_safe(event)
    return {
        "event": name, "pipeline": pipeline, "run_id": run_id, "state": state, "failed_task": failed_task,
        "error": error, "timestamp": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def emit_run_outcome(pipeline: str, run_id: str, state: str, gate_event_uri: str = "", failed_task: str = "",
                     error: str = "", stream: TextIO | None = None) -> dict[str, Any]:
    """Print `run_outcome_event(...)` as one JSON line to `stream` (stdout: the task's log) and return it."""
    event = run_outcome_event(pipeline, run_id, state, gate_event_uri, failed_task, error)
    print(event_json(event), file=stream or sys.stdout, flush=True)
    return event
