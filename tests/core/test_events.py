import io
import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from mangadistill.core.events import (
    RUN_FAILED_EVENT,
    RUN_SUCCEEDED_EVENT,
    copy_event,
    distilled_model_eval,
    emit_run_outcome,
    event_json,
    json_safe,
    run_event_uri,
    run_outcome_event,
    write_event,
)
from mangadistill.core.gates import Gate, evaluate_gates

GATES = [Gate("accuracy_retained", ">=", 0.98), Gate("ece", "<=", 0.1)]


def _event(metrics, **fields):
    return distilled_model_eval("intent-student-v1", "intent-ensemble-v3", metrics, evaluate_gates(GATES, metrics),
                                **fields)


def test_event_has_the_seed_keys_and_gate_outcomes():
    event = _event({"accuracy_retained": 0.99, "ece": 0.2}, run_id="r-17")
    assert list(event)[:3] == ["event", "student", "teacher"]
    assert event["event"] == "distilled_model_eval"
    assert (event["student"], event["teacher"]) == ("intent-student-v1", "intent-ensemble-v3")
    assert event["accuracy_retained"] == 0.99 and event["run_id"] == "r-17"
    assert event["thresholds"] == {
        "accuracy_retained": {"op": ">=", "threshold": 0.98},
        "ece": {"op": "<=", "threshold": 0.1},
    }
    assert event["gates"] == {"accuracy_retained": True, "ece": False}
    assert event["promote"] is False


def test_event_round_trips_through_json_with_nan_as_null():
    event = _event({"accuracy_retained": float("nan"), "ece": np.float32(0.05), "rows": np.int64(40)})
    line = event_json(event)
    assert "NaN" not in line
    decoded = json.loads(line)
    assert decoded == event
    assert decoded["accuracy_retained"] is None
    assert decoded["ece"] == pytest.approx(0.05)
    assert decoded["rows"] == 40


def test_timestamp_is_iso_8601_utc():
    fixed = datetime(2026, 3, 1, 14, 30, 5, tzinfo=timezone(timedelta(hours=9)))
    assert _event({}, timestamp=fixed)["timestamp"] == "2026-03-01T05:30:05Z"
    now = datetime.fromisoformat(_event({})["timestamp"])
    assert now.tzinfo is not None and abs(now - datetime.now(UTC)) < timedelta(minutes=1)
    with pytest.raises(ValueError, match="no timezone"):
        _event({}, timestamp=datetime(2026, 3, 1))


@pytest.mark.parametrize(
    ("metrics", "fields"),
    [({"promote": 1.0}, {}), ({"ece": 0.1}, {"ece": 0.2}), ({}, {"gates": "x"})],
)
def test_clashing_keys_are_refused(metrics, fields):
    with pytest.raises(ValueError, match="clash"):
        _event(metrics, **fields)


def test_json_safe_converts_nested_values_and_names_bad_keys():
    value = {"a": (1, float("inf")), "b": np.array([0.5, np.nan]), "c": np.bool_(True)}
    assert json_safe(value) == {"a": [1, None], "b": [0.5, None], "c": True}
    with pytest.raises(TypeError, match=r"event\.x\[1\]: object is not JSON-serialisable"):
        json_safe({"x": [1, object()]})


def test_write_event_writes_one_json_line(tmp_path):
    event = _event({"accuracy_retained": 0.99, "ece": 0.05})
    uri = tmp_path / "events" / "eval.json"
    write_event(event, str(uri))
    text = uri.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    assert json.loads(text) == event
    assert json.loads(text)["promote"] is True


# --- the run's outcome event (the exit handler's line) --------------------------------------------------------

def test_a_succeeded_run_logs_the_gate_event_with_pipeline_and_run_id(tmp_path):
    gate_event = tmp_path / "event.json"
    gate_event.write_text(json.dumps({"event": "distilled_model_eval", "student": "s", "promote": False}) + "\n")
    stream = io.StringIO()
    returned = emit_run_outcome("intent-x", "run-7", "SUCCEEDED", str(gate_event), stream=stream)

    (line,) = stream.getvalue().splitlines()
    assert json.loads(line) == returned == {"event": "distilled_model_eval", "student": "s", "promote": False,
                                            "pipeline": "intent-x", "run_id": "run-7"}


def test_a_failed_run_logs_a_failure_event_naming_pipeline_run_task_and_time(tmp_path):
    stream = io.StringIO()
    emit_run_outcome("intent-x", "run-8", "FAILED", str(tmp_path / "never-written.json"),
                     failed_task="intent-gate-check", error="OOMKilled", stream=stream)

    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert {k: v for k, v in event.items() if k != "timestamp"} == {
        "event": RUN_FAILED_EVENT, "pipeline": "intent-x", "run_id": "run-8", "state": "FAILED",
        "failed_task": "intent-gate-check", "error": "OOMKilled"}
    assert datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).tzinfo is not None


@pytest.mark.parametrize("content", [None, "not json", "[1, 2]"])
def test_a_succeeded_run_without_a_readable_gate_event_is_reported_with_the_reason(tmp_path, content):
    gate_event = tmp_path / "event.json"
    if content is not None:
        gate_event.write_text(content)
    event = run_outcome_event("intent-x", "run-9", "SUCCEEDED", str(gate_event))
    assert event["event"] == RUN_SUCCEEDED_EVENT and event["state"] == "SUCCEEDED"
    assert str(gate_event) in event["error"] and "unreadable" in event["error"]
    without_location = run_outcome_event("intent-x", "run-9", "SUCCEEDED", "")
    assert "set the pipeline's run_events_root" in without_location["error"]


def test_the_run_event_location_joins_root_run_id_and_file_and_needs_both():
    assert run_event_uri("r1", "gs://b/events/") == "gs://b/events/r1/distilled_model_eval.json"
    assert run_event_uri("r1", "", "gs://b/root") == "gs://b/root/events/r1/distilled_model_eval.json"
    assert run_event_uri("r1", "gs://b/own", "gs://b/root").startswith("gs://b/own/")  # its own root wins
    assert run_event_uri("", "gs://b/events") == "" and run_event_uri("r1", "", "") == ""


def test_copy_event_writes_a_copy_and_skips_what_storage_cannot_write(tmp_path, caplog):
    source = tmp_path / "event.json"
    source.write_text('{"event": "distilled_model_eval"}\n')
    assert copy_event(str(source), str(tmp_path / "events" / "run" / "copy.json"))
    assert (tmp_path / "events" / "run" / "copy.json").read_text() == source.read_text()
    assert not copy_event(str(source), "")
    assert not copy_event(str(source), "minio://bucket/events/run/copy.json")
    assert not copy_event(str(source), "{{$.pipeline_root}}/events/copy.json")
    assert "minio://bucket" in caplog.text
