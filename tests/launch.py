"""Run a training script as one process, or as several data-parallel processes under torchrun (gloo on the
CPU), the way a Kubeflow Trainer TrainJob or `accelerate launch` starts them; for the trainers' parity tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PARITY_TOLERANCE = 1e-5
"""Largest weight difference allowed between runs that make the same update, summed in another order."""


def run_training(script: str, spec: dict, folder: Path, name: str, processes: int = 1) -> Path:
    """Write `script` and `spec` (JSON, the script's argv[1]) under `folder`, run it with `processes` processes
    (one thread each, offline) and return folder/name, where the script is expected to write its model."""
    spec_path = folder / f"{name}.json"
    spec_path.write_text(json.dumps({**spec, "out": str(folder / name)}))
    script_path = folder / f"{name}.py"
    script_path.write_text(script)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
                if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([*launcher, str(script_path), str(spec_path)], capture_output=True, text=True,
                          timeout=900, env=env)
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return folder / name


def train_three_ways(script: str, spec: dict, folder: Path, accumulation: int = 2) -> dict[str, Path]:
    """The script's model trained by one process, by one process in `accumulation` micro-batches, and by two
    processes (spec gains "accumulation"): {"one", "accumulated", "parallel"} -> the output folder."""
    return {"one": run_training(script, {**spec, "accumulation": 1}, folder, "one"),
            "accumulated": run_training(script, {**spec, "accumulation": accumulation}, folder, "accumulated"),
            "parallel": run_training(script, {**spec, "accumulation": 1}, folder, "parallel", processes=2)}


def assert_same_update(runs: dict[str, dict], tensors: str) -> None:
    """runs[name] = {"processes", "losses", tensors: {name: tensor}}: the accumulated and the 2-process run end
    with the losses and tensors of the one-process run, within PARITY_TOLERANCE."""
    import pytest
    import torch

    one = runs["one"]
    assert (one["processes"], runs["parallel"]["processes"]) == (1, 2)
    for name in ("accumulated", "parallel"):
        assert runs[name]["losses"] == pytest.approx(one["losses"], abs=PARITY_TOLERANCE), name
        assert runs[name][tensors].keys() == one[tensors].keys()
        for key, tensor in one[tensors].items():
            torch.testing.assert_close(runs[name][tensors][key], tensor, atol=PARITY_TOLERANCE, rtol=0)
