"""The response pipeline run end to end through the CLI with kfp.local (tiny chat models built from configs)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama
from peft import PeftModel
from transformers import AutoModelForCausalLM

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.response.contracts import RESPONSE_EVAL_SLICES, REVIEW_PACKET
from mangadistill.response.training import ResponseTrainConfig, train_response_student
from mangadistill_pipelines.cli import main
from mangadistill_pipelines.response_distillation import DEMO, RESPONSE_OUTPUTS


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
    code = main(["run", "response", "--workdir", str(workdir), "--output-dir", str(out), "--teacher", str(tiny_chat_lm),
                 "--response-eval-per-slice", "2"]
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
    packet_rows = validate_table(packet, REVIEW_PACKET, "packet", on_bad_rows="fail").table.num_rows
    assert packet_rows == 2 * len(RESPONSE_EVAL_SLICES)  # one pair per eval row, 2 per slice
    assert AutoModelForCausalLM.from_pretrained(outputs["student"]).config.model_type == "llama"  # merged/
    report = json.loads((outputs["student_quantized"] / "response_quantization_report.json").read_text())
    assert set(report["models"]) == {"baseline", "int8", "nf4"}
    assert any((workdir / "pipeline_root" / "teacher-cache" / "response").iterdir()), "answers cached across runs"

    # promoted: the merged model and a LoRA adapter that loads with peft alone, over the plain base model
    (version,) = (out / "published" / "manga-student-135m-lora").iterdir()
    assert AutoModelForCausalLM.from_pretrained(version).config.model_type == "llama"
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chat_lm), str(version / "adapter"))
    assert adapted.peft_config["default"].r == 4
    assert "pipeline_tag: text-generation" in (version / "README.md").read_text()


def _task_output(pipeline_root: Path, task: str) -> dict:
    """The newest executor_output.json of `task` under a kfp.local pipeline root."""
    found = sorted(pipeline_root.glob(f"response-distillation-*/{task}/executor_output.json"),
                   key=lambda path: path.stat().st_mtime)
    assert found, f"no {task} output under {pipeline_root}"
    return json.loads(found[-1].read_text())


@pytest.mark.slow
def test_a_killed_training_task_resumes_on_rerun_and_the_teacher_is_not_paid_again(tiny_chat_lm, tmp_path,
                                                                                    monkeypatch):
    """The pipelines keep checkpoints and the teacher cache under the pipeline root: SIGKILL the whole run while
    the training task is between checkpoints, run it again, and the training resumes from the newest checkpoint
    to the weights of an uninterrupted training, with every teacher answer served from the cache."""
    workdir, out = tmp_path / "work", tmp_path / "out"
    params = {"student_model": tiny_chat_lm, "max_steps": 120, "checkpoint_every": 10, "batch_size": 3,
              "max_length": 64, "lora_r": 4, "teacher_max_new_tokens": 6, "eval_max_new_tokens": 4,
              "quantization_prompts": 1, "quantization_max_new_tokens": 3, "proxy_model": "",
              "judge_model": tiny_chat_lm, "judge_calibration_pairs": 2}
    arguments = (["run", "response", "--workdir", str(workdir), "--output-dir", str(out), "--teacher",
                  str(tiny_chat_lm), "--response-eval-per-slice", "1"]
                 + [arg for name, value in params.items() for arg in ("--param", f"{name}={value}")])
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the in-process teacher server is reached over HTTP
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    run = subprocess.Popen([sys.executable, "-c", "import sys; from mangadistill_pipelines.cli import main; "
                            "sys.exit(main(sys.argv[1:]))", *arguments], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = workdir / "pipeline_root" / "checkpoints" / "response"
    deadline = time.monotonic() + 900
    while not list(checkpoints.glob("*/step-*")):
        assert run.poll() is None, f"the run ended (exit {run.returncode}) before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 15 minutes"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)  # the run and its task processes, as a node loss would
    run.wait()
    killed_at = max(int(path.name.split("-")[1]) for path in checkpoints.glob("*/step-*"))
    assert killed_at < params["max_steps"], "the kill came after training had finished"
    assert not (out / RESPONSE_OUTPUTS["event"]).exists()

    assert main(arguments) == 0
    pipeline_root = workdir / "pipeline_root"
    trained = _task_output(pipeline_root, "response-distillation-training")["artifacts"]
    metrics = trained["metrics"]["artifacts"][0]["metadata"]
    assert metrics["resumed_from_step"] >= killed_at and metrics["steps"] == params["max_steps"]
    # the production prompts were labelled before training started; the rerun asks the teacher for none of them
    labelled = _task_output(pipeline_root, "response-merge-labels")["artifacts"]["metrics"]["artifacts"][0]
    assert labelled["metadata"]["teacher_calls"] == 0
    assert labelled["metadata"]["cache_hits"] == labelled["metadata"]["prompts"] > 0

    model_dir = Path(trained["model"]["artifacts"][0]["uri"])
    report = json.loads((model_dir / "training_report.json").read_text())
    examples = storage.read_table(_task_output(pipeline_root, "response-curation")["artifacts"]["train"]
                                  ["artifacts"][0]["uri"])
    uninterrupted = train_response_student(examples.column("prompt").to_pylist(),
                                           examples.column("response").to_pylist(), str(tmp_path / "whole"),
                                           ResponseTrainConfig(**report["config"]), progress=False)
    expected = AutoModelForCausalLM.from_pretrained(uninterrupted.merged_dir).state_dict()
    for name, tensor in AutoModelForCausalLM.from_pretrained(model_dir / "merged").state_dict().items():
        torch.testing.assert_close(tensor, expected[name])
