"""The response pipeline run end to end through the CLI with kfp.local (tiny chat models built from configs)."""

import json
from pathlib import Path

import pytest
from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama
from peft import PeftModel
from transformers import AutoModelForCausalLM

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.response.contracts import REVIEW_PACKET
from mangadistill_pipelines.cli import main
from mangadistill_pipelines.response_distillation import DEMO


@pytest.fixture(scope="module")
def tiny_chat_lm(tmp_path_factory) -> Path:
    """A tiny chat llama (teacher, student and base student at once) with room for the grounded teacher prompt."""
    tokenizer = build_chat_tokenizer(PROMPTS + RESPONSES + ["system user assistant MangaAssist"], vocab_size=400)
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-chat-lm"), tokenizer, layers=2, hidden=128,
                            intermediate=256, tie_embeddings=False, max_positions=4096)


@pytest.mark.slow
def test_response_pipeline_runs_end_to_end_through_the_cli(tiny_chat_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the in-process teacher server is reached over HTTP
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    workdir, out = tmp_path / "work", tmp_path / "out"
    lenient_gates = tmp_path / "gates.yaml"  # tiny models: a gate they pass, so the promoted branch runs
    lenient_gates.write_text("version: 1\ngates:\n  - {metric: hallucination_rate, op: '<=', threshold: 1}\n")
    params = {"student_model": tiny_chat_lm, "max_steps": 2, "batch_size": 3, "max_length": 64, "lora_r": 4,
              "teacher_max_new_tokens": 6, "eval_max_new_tokens": 4, "quantization_prompts": 1,
              "quantization_max_new_tokens": 3, "proxy_model": "", "judge_model": tiny_chat_lm,
              "gates_uri": str(lenient_gates)}
    code = main(["run", "response", "--workdir", str(workdir), "--output-dir", str(out), "--teacher", str(tiny_chat_lm)]
                + [arg for name, value in params.items() for arg in ("--param", f"{name}={value}")])
    assert code == 0
    outputs = DEMO.output_paths(out)
    for name, path in outputs.items():
        assert path.exists(), name

    event = json.loads(outputs["event"].read_text())
    assert event["event"] == "distilled_model_eval" and event["promote"] is True  # the lenient gates
    assert {"human_win_rate", "hallucination_rate", "cost_reduction"} <= set(event)
    report_html = outputs["report"].read_text()
    assert "awaiting human review" in report_html and "guided choice" in report_html  # judged in the gate task
    packet = storage.read_table(str(outputs["review_packet"]))
    assert validate_table(packet, REVIEW_PACKET, "packet", on_bad_rows="fail").table.num_rows == 6
    assert AutoModelForCausalLM.from_pretrained(outputs["student"]).config.model_type == "llama"  # merged/
    report = json.loads((outputs["student_quantized"] / "response_quantization_report.json").read_text())
    assert set(report["models"]) == {"baseline", "int8", "nf4"}
    assert (workdir / "response_teacher_cache").is_dir(), "teacher answers are cached across runs"

    # promoted: the merged model and a LoRA adapter that loads with peft alone, over the plain base model
    (version,) = (out / "published" / "manga-student-135m-lora").iterdir()
    assert AutoModelForCausalLM.from_pretrained(version).config.model_type == "llama"
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chat_lm), str(version / "adapter"))
    assert adapted.peft_config["default"].r == 4
    assert "pipeline_tag: text-generation" in (version / "README.md").read_text()
