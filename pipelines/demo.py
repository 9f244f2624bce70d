"""What `mangadistill run <pipeline>` needs from a pipeline module: each pipeline owns its demo.

A pipeline module exposes `DEMO = DemoPipeline(...)`; the CLI looks it up by name in `DEMOS` and never branches on
the pipeline. `prepare` builds the sample data (and a demo teacher when none is given) and returns the pipeline's
arguments; after the run, `DemoPipeline.publish` copies the outputs to stable names under --output-dir.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DemoArguments:
    """A prepared demo run: the pipeline's arguments, the host folders its tasks read (the DockerRunner mounts
    them), and extra files to copy next to the outputs ({name under --output-dir: source path})."""

    arguments: dict[str, Any]
    local_inputs: list[str]
    extra_outputs: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoPipeline:
    """name: the CLI's pipeline name; pipeline: the @dsl.pipeline function; outputs: {pipeline output: name
    under --output-dir} (an output that is a folder with a `subfolder` to publish maps to "name:subfolder");
    prepare(args, params) -> DemoArguments, where args are the CLI's parsed options (workdir, seed, teacher,
    base_model, runner, data sizes) and params the --param overrides; generate_data(args) -> {name: path} writes
    the sample data under args.workdir/data (`mangadistill data`); bootstrap_teacher(args) -> the demo teacher's
    folder (`mangadistill bootstrap-teacher NAME`; None when the pipeline has no trainable demo teacher)."""

    name: str
    pipeline: Callable
    outputs: Mapping[str, str]
    prepare: Callable[[argparse.Namespace, dict], DemoArguments]
    generate_data: Callable[[argparse.Namespace], dict[str, Path]]
    bootstrap_teacher: Callable[[argparse.Namespace], Path] | None = None

    def publish(self, task, out: Path, demo: DemoArguments) -> dict:
        """Copy the outputs (and `demo.extra_outputs`) under `out`; return the event the gate wrote."""
        from mangadistill_pipelines.local import copy_output

        for output, target in self.outputs.items():
            name, _, subfolder = target.partition(":")
            source = task.outputs[output].path
            copy_output(str(Path(source, subfolder)) if subfolder else source, out / name)
        for name, source in demo.extra_outputs.items():
            copy_output(str(source), out / name)
        return json.loads((out / self.outputs["event"].partition(":")[0]).read_text())

    def output_paths(self, out: Path) -> dict[str, Path]:
        """{output: its path under `out`}, extra outputs excluded."""
        return {output: out / target.partition(":")[0] for output, target in self.outputs.items()}


def demo_pipelines() -> dict[str, DemoPipeline]:
    """The pipelines `mangadistill run` knows, by name (imported lazily: each pulls in kfp and its components)."""
    from mangadistill_pipelines.intent_distillation import DEMO as INTENT
    from mangadistill_pipelines.reranker_distillation import DEMO as RERANKER
    from mangadistill_pipelines.response_distillation import DEMO as RESPONSE

    return {demo.name: demo for demo in (INTENT, RERANKER, RESPONSE)}


def demo_teacher_dir(workdir: Path, name: str) -> Path:
    """Where `mangadistill bootstrap-teacher NAME` puts the demo teacher: WORKDIR/teachers/NAME."""
    return workdir / "teachers" / name


def teacher_or_demo(args: argparse.Namespace, name: str, bootstrap: Callable[[argparse.Namespace], Path]) -> str:
    """args.teacher when given, else the demo teacher's folder, fine-tuned first by `bootstrap(args)` when it
    holds no model yet."""
    if args.teacher is not None:
        return args.teacher
    folder = demo_teacher_dir(args.workdir, name)
    if not (folder / "config.json").exists():
        bootstrap(args)
    return str(folder)
