"""Run a compiled-in-memory pipeline on this machine with kfp.local, and copy its outputs to stable names."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from kfp import local

log = logging.getLogger(__name__)
RUNNERS = ("subprocess", "docker")


def init_local(pipeline_root: str, runner: str = "subprocess", enable_caching: bool = True) -> None:
    """kfp.local with the SubprocessRunner in this Python environment, or the DockerRunner (stage images)."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    chosen = local.SubprocessRunner(use_venv=False) if runner == "subprocess" else local.DockerRunner()
    local.init(runner=chosen, pipeline_root=pipeline_root, enable_caching=enable_caching)


def run_locally(pipeline: Callable, arguments: dict, pipeline_root: str, runner: str = "subprocess",
                enable_caching: bool = True):
    """Run `pipeline(**arguments)` locally and return its task (outputs under `.outputs`)."""
    init_local(pipeline_root, runner, enable_caching)
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
