"""Run a compiled-in-memory pipeline on this machine with kfp.local, and copy its outputs to stable names."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from kfp import local

log = logging.getLogger(__name__)
RUNNERS = ("subprocess", "docker")


def docker_runner(local_inputs: list[str]) -> local.DockerRunner:
    """DockerRunner for the stage images: containers run as this user (the images accept any uid), so they
    can read its files and what they write stays its own; each local input folder is mounted read-only at its
    own path, since task arguments are host paths."""
    from docker.types import Mount

    folders = sorted({str(Path(p).resolve()) for p in local_inputs})
    return local.DockerRunner(
        user=f"{os.getuid()}:{os.getgid()}",
        mounts=[Mount(target=f, source=f, type="bind", read_only=True) for f in folders],
    )


def resolve_named_task_outputs_in_conditions() -> None:
    """Let kfp.local's `dsl.If` read a task's named output (`gate.outputs["promote"] == True`).

    kfp.local (2.17) resolves a condition's `pipelinechannel--<task>-<output>` only for a single-output task
    (`<task>-Output`); for a named output it finds nothing and skips the branch, where a cluster runs it. Output
    names are Python identifiers (no "-"), so the channel splits at its last "-" into task and output; what is not
    a task output is looked up as kfp.local does (a parent input)."""
    from kfp.local.orchestrator.enhanced_dag_orchestrator import ConditionEvaluator

    if getattr(ConditionEvaluator, "_mangadistill_named_outputs", False):
        return
    resolve_as_kfp_does = ConditionEvaluator._resolve_pipeline_channel

    def resolve(channel_ref: str, io_store):
        task, _, output = channel_ref.removeprefix("pipelinechannel--").rpartition("-")
        if task and output != "Output":
            try:
                return io_store.get_task_output(task, output)
            except (KeyError, ValueError):
                pass
        return resolve_as_kfp_does(channel_ref, io_store)

    ConditionEvaluator._resolve_pipeline_channel = staticmethod(resolve)
    ConditionEvaluator._mangadistill_named_outputs = True


def init_local(pipeline_root: str, runner: str = "subprocess", enable_caching: bool = True,
               local_inputs: list[str] = ()) -> None:
    """kfp.local with the SubprocessRunner in this Python environment, or the DockerRunner (stage images); a
    condition on a task's named output works as on a cluster (`resolve_named_task_outputs_in_conditions`)."""
    resolve_named_task_outputs_in_conditions()
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    chosen = local.SubprocessRunner(use_venv=False) if runner == "subprocess" else docker_runner(list(local_inputs))
    local.init(runner=chosen, pipeline_root=pipeline_root, enable_caching=enable_caching)


def run_locally(pipeline: Callable, arguments: dict, pipeline_root: str, runner: str = "subprocess",
                enable_caching: bool = True, local_inputs: list[str] = ()):
    """Run `pipeline(**arguments)` locally and return its task (outputs under `.outputs`).

    local_inputs: host folders the tasks read (data, model folders); the DockerRunner mounts them.
    """
    init_local(pipeline_root, runner, enable_caching, local_inputs)
    return pipeline(**arguments)


def copy_output(source: str, destination: Path) -> Path:
    """Copy an artifact (file or folder) to `destination`, replacing what is there."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.is_dir():
        shutil.rmtree(destination)
    elif destination.exists():
        destination.unlink()
    if Path(source).is_dir():
        shutil.copytree(source, destination)
    else:
        shutil.copy2(source, destination)
    return destination


_ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")
_INNER_TASK_FAILED = re.compile(r"Inner task failed: (?P<chain>.+?)\.?$")


def failure_of(error: RuntimeError) -> tuple[str, str]:
    """(failed task, message without colour codes) from kfp.local's "Pipeline P finished with status FAILURE.
    Inner task failed: T inside exit-handler-1." error; the task is "" when the message names none."""
    message = _ANSI_CODE.sub("", str(error)).strip()
    match = _INNER_TASK_FAILED.search(message)
    return (match["chain"].split(" inside ")[0].strip().strip("'") if match else ""), message
