"""The intent trainer data-parallel and with gradient accumulation: two processes under torchrun (gloo, on the
CPU) and a batch cut into micro-batches make the update one process makes with the same global batch."""

import json
from pathlib import Path

import numpy as np
import pytest
from launch import PARITY_TOLERANCE, assert_same_update, train_three_ways
from safetensors.torch import load_file

from mangadistill.core.training import micro_batches

TEXTS = ["hello there friend", "hi how are you", "good morning to you", "hey hello", "greetings from the shop",
         "this is broken and awful", "terrible service, refund now", "my order arrived damaged", "worst shop ever",
         "the cover is torn"]
HARD = ["greeting"] * 5 + ["complaint"] * 5
SOFT = np.tile([0.7, 0.3], (len(TEXTS), 1)).tolist()
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


def _read(out: Path) -> dict:
    report = json.loads((out / "training_report.json").read_text())
    return {"processes": report["processes"], "losses": report["epoch_losses"],
            "weights": load_file(out / "model.safetensors")}


def test_two_processes_and_accumulation_make_the_update_one_process_makes(dropout_free_encoder, tmp_path):
    spec = {"base": str(dropout_free_encoder), "texts": TEXTS, "hard": HARD, "soft": SOFT}
    runs = {name: _read(out) for name, out in train_three_ways(TRAIN_SCRIPT, spec, tmp_path).items()}
    start = load_file(dropout_free_encoder / "model.safetensors")
    moved = max(float((runs["one"]["weights"][f"bert.{name}"] - tensor).abs().max()) for name, tensor in start.items()
                if f"bert.{name}" in runs["one"]["weights"])
    assert moved > 100 * PARITY_TOLERANCE  # training changed the weights far more than the tolerance
    assert_same_update(runs, "weights")
