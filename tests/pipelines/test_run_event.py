"""Every compiled pipeline ends with the exit handler's run event, and `run` logs the same line locally."""

from pathlib import Path

import pytest
import yaml

from mangadistill_pipelines.compile import PIPELINES
from mangadistill_pipelines.local import failure_of

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
    # a KFP cluster fills in a placeholder only when it is the whole value
    assert parameters["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert parameters["pipeline_root"]["runtimeValue"]["constant"] == "{{$.pipeline_root}}"
    assert parameters["run_events_root"] == {"componentInputParameter": "run_events_root"}

    body = spec["components"][root_tasks["exit-handler-1"]["componentRef"]["name"]]["dag"]["tasks"]
    task = name.removesuffix("_distillation")
    gate = body[f"{task}-gate-check"]["inputs"]["parameters"]
    for location in ("run_id", "pipeline_root"):  # the gate writes its copy where the exit task reads it
        assert gate[location] == parameters[location]
    assert gate["run_events_root"] == {"componentInputParameter": "pipelinechannel--run_events_root"}


def test_a_local_failure_names_the_innermost_failed_task_without_colour_codes():
    error = RuntimeError("Pipeline \x1b[95m'intent'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m. Inner task "
                         "failed: \x1b[96m'intent-gate-check'\x1b[0m inside \x1b[96m'condition-1'\x1b[0m.")
    task, message = failure_of(error)
    assert task == "intent-gate-check"
    assert "\x1b" not in message and message.startswith("Pipeline 'intent' finished with status FAILURE")
    assert failure_of(RuntimeError("something else")) == ("", "something else")
