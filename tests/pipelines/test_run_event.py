"""Every compiled pipeline ends with the exit handler's run event, and `run` logs the same line locally."""

from pathlib import Path

import pytest
import yaml

from mangadistill_pipelines.compile import PIPELINES
from mangadistill_pipelines.local import failure_of
from mangadistill_pipelines.run_event import gate_event_copy_uri

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(PIPELINES))
def test_every_stage_runs_under_an_exit_handler_whose_task_logs_the_gate_event(name):
    spec = next(yaml.safe_load_all((ROOT / "pipelines" / f"{name}.yaml").read_text()))
    root_tasks = spec["root"]["dag"]["tasks"]
    assert set(root_tasks) == {"core-run-event", "exit-handler-1"}, "every stage sits inside the exit handler"
    exit_task = root_tasks["core-run-event"]
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"  # runs whatever the outcome
    assert exit_task["inputs"]["parameters"]["status"] == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
    parameters = exit_task["inputs"]["parameters"]
    assert parameters["pipeline_name"]["runtimeValue"]["constant"] == spec["pipelineInfo"]["name"]
    assert parameters["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"

    body = spec["components"][root_tasks["exit-handler-1"]["componentRef"]["name"]]["dag"]["tasks"]
    task = name.removesuffix("_distillation")
    gate = body[f"{task}-gate-check"]
    copy_uri = gate["inputs"]["parameters"]["event_copy_uri"]["runtimeValue"]["constant"]
    assert copy_uri == parameters["gate_event_uri"]["runtimeValue"]["constant"] == gate_event_copy_uri()
    assert copy_uri.startswith("{{$.pipeline_root}}/events/{{$.pipeline_job_uuid}}/")


def test_a_local_failure_names_the_innermost_failed_task_without_colour_codes():
    error = RuntimeError("Pipeline \x1b[95m'intent'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m. Inner task "
                         "failed: \x1b[96m'intent-gate-check'\x1b[0m inside \x1b[96m'condition-1'\x1b[0m.")
    task, message = failure_of(error)
    assert task == "intent-gate-check"
    assert "\x1b" not in message and message.startswith("Pipeline 'intent' finished with status FAILURE")
    assert failure_of(RuntimeError("something else")) == ("", "something else")
