"""The intent trainer data-parallel and with gradient accumulation: two processes under torchrun (gloo, on the
CPU) and a batch cut into micro-batches make the update one process makes with the same global batch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mangadistill.core.training import micro_batches

TEXTS = ["hello there friend", "hi how are you", "good morning to you", "hey hello", "greetings from the shop",
         "this is broken and awful", "terrible service, refund now", "my order arrived damaged", "worst shop ever",
         "the cover is torn"]
HARD = ["greeting"] * 5 + ["complaint"] * 5
SOFT = np.tile([0.7, 0.3], (len(TEXTS), 1)).tolist()
TOLERANCE = 1e-5
"""Largest weight difference allowed: the same update, summed in another order across processes."""
TRAIN_SCRIPT = """
import json, sys
import numpy as np
from mangadistill.intent.training import TrainConfig, train_classifier
spec = json.load(open(sys.argv[1]))
config = TrainConfig(epochs=2, batch_size=5, learning_rate=2e-3, beta=0.5, temperature=2.0, class_weighting="none",
                     warmup_ratio=0.0, gradient_accumulation_steps=spec["accumulation"])
train_classifier(spec["base"], spec["texts"], spec["hard"], ["greeting", "complaint"], spec["out"], config,
                 soft_labels=np.array(spec["soft"], dtype=np.float32), progress=False)
"""


def test_micro_batches_weigh_each_share_so_the_mean_over_processes_is_the_batch_mean():
    batch = np.arange(7)
    for world in (1, 2, 3):
        for accumulation in (1, 2, 4):
            parts = [micro_batches(batch, rank, world, accumulation) for rank in range(world)]
            rows = sorted(int(row) for shares in parts for micro, _ in shares for row in micro)
            assert rows == list(range(7))  # every row once, in one process's share
            values = batch.astype(float) ** 2  # any per-row loss: its weighted micro means average to the mean
            mean_over_processes = np.mean([sum(weight * values[micro].mean() for micro, weight in shares)
                                           for shares in parts])
            assert mean_over_processes == pytest.approx(values.mean())
    assert micro_batches(np.arange(1), rank=1, world=2, accumulation=1)[0][1] == 0.0  # empty share: weight 0
    with pytest.raises(ValueError, match="rank"):
        micro_batches(batch, rank=2, world=2, accumulation=1)


@pytest.fixture(scope="module")
def dropout_free_encoder(tiny_encoder, tmp_path_factory) -> Path:
    """The tiny encoder without dropout: each process would otherwise draw its own masks."""
    folder = tmp_path_factory.mktemp("no-dropout") / "encoder"
    shutil.copytree(tiny_encoder, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _train(tmp_path: Path, base: Path, name: str, accumulation: int = 1, processes: int = 1) -> dict:
    spec = tmp_path / f"{name}.json"
    spec.write_text(json.dumps({"base": str(base), "out": str(tmp_path / name), "accumulation": accumulation,
                                "texts": TEXTS, "hard": HARD, "soft": SOFT}))
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
                if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([*launcher, str(script), str(spec)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((tmp_path / name / "training_report.json").read_text())
    return {"processes": report["processes"], "losses": report["epoch_losses"],
            "weights": load_file(tmp_path / name / "model.safetensors")}


def test_two_processes_and_accumulation_make_the_update_one_process_makes(dropout_free_encoder, tmp_path):
    one = _train(tmp_path, dropout_free_encoder, "one")
    accumulated = _train(tmp_path, dropout_free_encoder, "accumulated", accumulation=2)
    parallel = _train(tmp_path, dropout_free_encoder, "parallel", processes=2)
    assert (one["processes"], parallel["processes"]) == (1, 2)
    start = load_file(dropout_free_encoder / "model.safetensors")
    moved = max(float((one["weights"][f"bert.{name}"] - tensor).abs().max()) for name, tensor in start.items()
                if f"bert.{name}" in one["weights"])
    assert moved > 100 * TOLERANCE  # training changed the weights far more than the tolerance
    for other in (accumulated, parallel):
        assert other["losses"] == pytest.approx(one["losses"], abs=TOLERANCE)
        assert other["weights"].keys() == one["weights"].keys()
        for name, tensor in one["weights"].items():
            torch.testing.assert_close(other["weights"][name], tensor, atol=TOLERANCE, rtol=0)
