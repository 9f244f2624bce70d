"""core_run_event as an exit task under kfp.local: one parseable JSON line for a run that succeeded (the gate's
event) and for one that failed (a failure event naming the pipeline and the state)."""

import json

import pytest
from kfp import dsl, local

from mangadistill.core.events import EVENT_NAME, RUN_FAILED_EVENT, run_event_uri
from mangadistill_components.core.run_event import core_run_event
from mangadistill_pipelines.run_event import run_event_location


@dsl.component(base_image="python:3.11")
def fake_gate(fail: bool, run_events_root: str, pipeline_root: str, run_id: str):
    """Stands for a gate task: writes a promoted event where the exit task reads it, or fails."""
    import json
    from pathlib import Path

    from mangadistill.core.events import run_event_uri

    if fail:
        raise RuntimeError("the gate task broke")
    copy = Path(run_event_uri(run_id, run_events_root, pipeline_root))
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(json.dumps({"event": "distilled_model_eval", "student": "s", "promote": True}))


@dsl.pipeline(name="run-event-alone")
def run_event_alone(fail: bool, run_events_root: str = ""):
    exit_task = core_run_event(pipeline_name="run-event-alone", **run_event_location(run_events_root))
    with dsl.ExitHandler(exit_task):
        fake_gate(fail=fail, **run_event_location(run_events_root))


def _event_lines(output: str) -> list[dict]:
    """The task log lines that are JSON events (kfp.local indents a task's streamed stdout)."""
    return [json.loads(line.strip()) for line in output.splitlines() if line.strip().startswith('{"event"')]


@pytest.mark.parametrize(("fail", "own_root"), [(False, False), (False, True), (True, False)])
def test_the_exit_task_logs_one_event_line_for_any_outcome(tmp_path, capfd, fail, own_root):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               enable_caching=False)
    events_root = str(tmp_path / "events") if own_root else ""  # else <pipeline root>/events
    if fail:
        with pytest.raises(RuntimeError, match="fake-gate"):
            run_event_alone(fail=True, run_events_root=events_root)
    else:
        run_event_alone(fail=False, run_events_root=events_root)

    (event,) = _event_lines(capfd.readouterr().out)
    assert event["pipeline"] == "run-event-alone" and event["run_id"]
    if fail:
        assert event["event"] == RUN_FAILED_EVENT and event["state"] == "FAILED"
        assert event["failed_task"] and event["timestamp"].endswith("Z")
    else:
        assert event == {"event": EVENT_NAME, "student": "s", "promote": True, "pipeline": "run-event-alone",
                         "run_id": event["run_id"]}
        written = run_event_uri(event["run_id"], events_root, str(tmp_path / "root"))
        assert written.startswith(events_root or str(tmp_path / "root" / "events"))
