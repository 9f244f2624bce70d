"""Run a compiled-in-memory pipeline on this machine with kfp.local, and copy its outputs to stable names."""

from __future__ import annotations

import logging
import os
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


def init_local(pipeline_root: str, runner: str = "subprocess", enable_caching: bool = True,
               local_inputs: list[str] = ()) -> None:
    """kfp.local with the SubprocessRunner in this Python environment, or the DockerRunner (stage images)."""
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
