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
