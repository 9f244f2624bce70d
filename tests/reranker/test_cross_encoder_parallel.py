"""The cross-encoder trainer data-parallel and with gradient accumulation: two processes under torchrun (gloo,
on the CPU) and micro-batches make the update one process makes (α·BCE + (1 − α)·MSE, a per-row mean)."""

import json
from pathlib import Path

from launch import assert_same_update, train_three_ways
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


def _read(out: Path) -> dict:
    report = json.loads((out / "training_report.json").read_text())
    return {"processes": report["processes"], "losses": report["epoch_losses"],
            "weights": load_file(out / "model.safetensors")}


def test_two_processes_and_accumulation_make_the_update_one_process_makes(dropout_free_encoder, tmp_path):
    spec = {"base": str(dropout_free_encoder), "pairs": PAIRS}
    runs = {name: _read(out) for name, out in train_three_ways(TRAIN_SCRIPT, spec, tmp_path).items()}
    assert runs["one"]["losses"][-1] < runs["one"]["losses"][0]
    assert_same_update(runs, "weights")
