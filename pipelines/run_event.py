"""The pipelines' exit handler: every run, whatever its outcome, ends with one JSON event line in its log.

`with_run_event(pipeline, name)` is the pipeline that compile writes and submit sends: the same tasks as
`pipeline`, under a `dsl.ExitHandler` whose exit task (`core_run_event`) logs the gate's `distilled_model_eval`
event when the run succeeded, else a `distilled_model_run_failed` event. KFP refuses pipeline outputs from inside
an exit handler, so the wrapped pipeline has none; `mangadistill run` runs `pipeline` itself (its outputs are
copied under --output-dir) and emits the same line through the same library call (`core.events`).
"""

from __future__ import annotations

import functools
import inspect

from kfp import dsl
from kfp.dsl.base_component import BaseComponent

from mangadistill_components.core.run_event import core_run_event

EXIT_HANDLER_NAME = "distillation"
"""The exit handler group's display name (KFP names the group `exit-handler-1` in the compiled YAML)."""


def run_event_location(run_events_root: str) -> dict[str, str]:
    """The gate's and the exit task's arguments that name where the gate copies its event and the exit task reads
    it (an exit task may not take another task's output): `<run_events_root>/<run id>/`, or
    `<pipeline root>/events/<run id>/` when run_events_root is empty (`core.events.run_event_uri`). Each
    placeholder is a whole argument: a KFP cluster fills in nothing else."""
    return {"run_events_root": run_events_root, "pipeline_root": dsl.PIPELINE_ROOT_PLACEHOLDER,
            "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER}


def with_run_event(pipeline: BaseComponent, name: str, description: str) -> BaseComponent:
    """A pipeline `name` with `pipeline`'s parameters (which include `run_events_root`) and tasks, wrapped in an
    exit handler that logs the run's event for any outcome; its own outputs are dropped (KFP allows none from
    inside an exit handler)."""
    body = pipeline.pipeline_func
    signature = inspect.signature(body)

    @functools.wraps(body)
    def under_exit_handler(*args, **kwargs) -> None:
        arguments = signature.bind(*args, **kwargs).arguments
        exit_task = core_run_event(pipeline_name=name, **run_event_location(arguments["run_events_root"]))
        exit_task.set_display_name("run event (any outcome)")
        exit_task.set_cpu_request("0.25").set_cpu_limit("1").set_memory_request("512Mi").set_memory_limit("1Gi")
        with dsl.ExitHandler(exit_task, name=EXIT_HANDLER_NAME):
            body(**arguments)

    under_exit_handler.__signature__ = signature.replace(return_annotation=inspect.Signature.empty)
    under_exit_handler.__annotations__ = {key: value for key, value in body.__annotations__.items()
                                          if key != "return"}
    return dsl.pipeline(name=name, description=description)(under_exit_handler)
