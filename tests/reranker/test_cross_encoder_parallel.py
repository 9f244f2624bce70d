"""The cross-encoder trainer data-parallel and with gradient accumulation: two processes under torchrun (gloo,
on the CPU) and micro-batches make the update one process makes (α·BCE + (1 − α)·MSE, a per-row mean)."""

import json
from pathlib import Path

import pytest
import torch
from launch import PARITY_TOLERANCE, run_training
from safetensors.torch import load_file

PAIRS = [{"query_id": f"q{i // 3}", "query": query, "candidate_text": text, "relevance": grade,
          "teacher_score": score}
         for i, (query, text, grade, score) in enumerate([
             ("pirate adventure", "One Piece: pirates sail for treasure", 3, 0.9),
             ("pirate adventure", "Nana: two women in Tokyo", 0, 0.1),
             ("pirate adventure", "Vinland Saga: viking raids at sea", 2, 0.6),
             ("cooking battles", "Food Wars: a cooking school's duels", 3, 0.95),
             ("cooking battles", "Berserk: a mercenary's revenge", 0, 0.05),
             ("cooking battles", "Oishinbo: a journalist seeks the ultimate menu", 2, 0.7),
             ("boxing", "Ashita no Joe: a boxer from the slums", 3, 0.9),
             ("boxing", "Medaka Box: a student council", 0, 0.2),
         ])]
TRAIN_SCRIPT = """
import json, sys
from mangadistill.reranker.cross_encoder import RerankerTrainConfig, train_cross_encoder
spec = json.load(open(sys.argv[1]))
config = RerankerTrainConfig(epochs=2, batch_size=4, learning_rate=2e-3, warmup_ratio=0.0, alpha=0.5,
                             gradient_accumulation_steps=spec["accumulation"])
train_cross_encoder(spec["pairs"], spec["base"], spec["out"], config, progress=False)
"""


def _train(tmp_path: Path, base: Path, name: str, accumulation: int = 1, processes: int = 1) -> dict:
    out = run_training(TRAIN_SCRIPT, {"base": str(base), "accumulation": accumulation, "pairs": PAIRS}, tmp_path,
                       name, processes)
    report = json.loads((out / "training_report.json").read_text())
    return {"processes": report["processes"], "losses": report["epoch_losses"],
            "weights": load_file(out / "model.safetensors")}


def test_two_processes_and_accumulation_make_the_update_one_process_makes(dropout_free_encoder, tmp_path):
    one = _train(tmp_path, dropout_free_encoder, "one")
    accumulated = _train(tmp_path, dropout_free_encoder, "accumulated", accumulation=2)
    parallel = _train(tmp_path, dropout_free_encoder, "parallel", processes=2)
    assert (one["processes"], parallel["processes"]) == (1, 2)
    assert one["losses"][-1] < one["losses"][0]
    for other in (accumulated, parallel):
        assert other["losses"] == pytest.approx(one["losses"], abs=PARITY_TOLERANCE)
        for name, tensor in one["weights"].items():
            torch.testing.assert_close(other["weights"][name], tensor, atol=PARITY_TOLERANCE, rtol=0)
