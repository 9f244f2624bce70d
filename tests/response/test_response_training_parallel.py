"""The response trainer data-parallel and with gradient accumulation: two processes under torchrun (gloo, on
the CPU) and micro-batches weighted by their response tokens make the update one process makes."""

import json
from pathlib import Path

import pytest
from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama
from launch import assert_same_update, train_three_ways
from safetensors.torch import load_file

TRAIN_SCRIPT = """
import json, sys
from mangadistill.response.training import ResponseTrainConfig, train_response_student
spec = json.load(open(sys.argv[1]))
config = ResponseTrainConfig(student_model=spec["student"], max_steps=4, batch_size=3, learning_rate=5e-3,
                             warmup_ratio=0.0, max_length=64, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                             gradient_accumulation_steps=spec["accumulation"])
train_response_student(spec["prompts"], spec["responses"], spec["out"], config, progress=False)
"""


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    tokenizer = build_chat_tokenizer(PROMPTS + RESPONSES + ["system user assistant MangaAssist"], vocab_size=400)
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-lm"), tokenizer)


def _read(out: Path) -> dict:
    report = json.loads((out / "training_report.json").read_text())
    return {"processes": report["processes"], "losses": report["step_losses"],
            "adapter": load_file(out / "adapter" / "adapter_model.safetensors")}


def test_two_processes_and_accumulation_make_the_update_one_process_makes(tiny_lm, tmp_path):
    spec = {"student": str(tiny_lm), "prompts": PROMPTS, "responses": RESPONSES}
    # a batch of 3 rows: one row per micro-batch, and shares of 2 rows and 1 row weighted by their tokens
    runs = {name: _read(out) for name, out in train_three_ways(TRAIN_SCRIPT, spec, tmp_path, accumulation=3).items()}
    assert max(float(t.abs().max()) for name, t in runs["one"]["adapter"].items() if "lora_B" in name) > 1e-3
    assert_same_update(runs, "adapter")
