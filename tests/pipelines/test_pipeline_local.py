"""The intent pipeline, and a user's pipeline reusing one compiled component, run end to end with kfp.local.

Tiny models built from configs keep this fast; the quality figures come from `make bench` with real models.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama
from kfp import components, dsl
from transformers import AutoModelForCausalLM, pipeline

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.intent.labels import INTENTS
from mangadistill.response.contracts import REVIEW_PACKET
from mangadistill.sample_data.messages import build_sample_splits
from mangadistill_pipelines.cli import INTENT_OUTPUTS, RESPONSE_OUTPUTS, main
from mangadistill_pipelines.local import run_locally

ROOT = Path(__file__).resolve().parents[2]
TITLES = [
    {"title": "Nana", "authors": ["Ai Yazawa"], "genres": ["romance", "drama"], "volumes": 21},
    {"title": "Monster", "authors": ["Naoki Urasawa"], "genres": ["mystery", "thriller"], "volumes": 18},
    {"title": "Yotsuba&!", "authors": ["Kiyohiko Azuma"], "genres": ["comedy", "slice of life"], "volumes": 15},
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("data")
    splits = build_sample_splits(seed=3, n_labelled=40, n_production=120, n_eval=60, titles=TITLES)
    paths = {}
    for name in ("production_log", "eval"):
        paths[name] = out / f"{name}.parquet"
        storage.write_table(splits[name], str(paths[name]))
    return paths


@pytest.mark.slow
def test_intent_pipeline_runs_end_to_end_through_the_cli(sample, tiny_intent_classifier, tiny_encoder, tmp_path):
    workdir, out = tmp_path / "work", tmp_path / "out"
    data = workdir / "data"
    data.mkdir(parents=True)
    # the CLI generates data only when some split is missing; give it ours
    for name, target in (("production_log", "intent_production_log"), ("eval", "intent_eval")):
        (data / f"{target}.parquet").write_bytes(sample[name].read_bytes())
    for other in ("catalog", "intent_labelled", "intent_production_truth", "intent_eval_truth"):
        (data / f"{other}.parquet").write_bytes(sample["eval"].read_bytes())
    code = main([
        "run", "intent", "--workdir", str(workdir), "--output-dir", str(out), "--teacher", str(tiny_intent_classifier),
        "--param", f"student_model={tiny_encoder}", "--param", "adjudicator=none", "--param", "epochs=1",
    ])
    assert code == 0
    for name in INTENT_OUTPUTS.values():
        assert (out / name).exists(), name

    event = json.loads((out / INTENT_OUTPUTS["event"]).read_text())
    assert event["event"] == "distilled_model_eval" and event["promote"] is False  # tiny untrained models
    assert set(event["gates"]) >= {"accuracy_retained", "latency_speedup_p50", "int8_size_ratio"}
    assert "DO NOT PROMOTE" in (out / INTENT_OUTPUTS["report"]).read_text()

    classify = pipeline("text-classification", model=str(out / INTENT_OUTPUTS["student"]), device="cpu")
    assert classify("where is my order?")[0]["label"] in INTENTS
    session = ort.InferenceSession(str(out / INTENT_OUTPUTS["student_int8"] / "model.int8.onnx"))
    assert {i.name for i in session.get_inputs()} >= {"input_ids", "attention_mask"}


@pytest.mark.slow
def test_compiled_component_reused_in_another_pipeline_runs_locally(sample, tiny_intent_classifier, tmp_path):
    labeling = components.load_component_from_file(str(ROOT / "components/teacher_labeling/component.yaml"))

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def share_of_rule_hits(votes: dsl.Input[dsl.Dataset]) -> float:
        import pyarrow.parquet as pq

        table = pq.read_table(votes.path)
        return sum(r is not None for r in table.column("rule_intent").to_pylist()) / table.num_rows

    @dsl.pipeline(name="reuse-teacher-labeling")
    def reuse(messages_uri: str, teacher: str) -> float:
        messages = dsl.importer(artifact_uri=messages_uri, artifact_class=dsl.Dataset)
        votes = labeling(messages=messages.output, teacher_model=teacher, adjudicator="none")
        return share_of_rule_hits(votes=votes.outputs["member_votes"]).output

    task = run_locally(reuse, {"messages_uri": str(sample["production_log"]), "teacher": str(tiny_intent_classifier)},
                       str(tmp_path / "root"), enable_caching=False)
    rows = pq.read_table(sample["production_log"]).num_rows
    assert 0.0 < task.output < 0.2, "escalation/account-security rules fire on a small share of a realistic log"
    assert np.isfinite(task.output) and rows == 120


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
    params = {"student_model": tiny_chat_lm, "max_steps": 2, "batch_size": 3, "max_length": 64, "lora_r": 4,
              "teacher_max_new_tokens": 6, "eval_max_new_tokens": 4, "quantization_prompts": 1,
              "quantization_max_new_tokens": 3, "proxy_model": "", "judge_model": tiny_chat_lm}
    code = main(["run", "response", "--workdir", str(workdir), "--output-dir", str(out), "--teacher", str(tiny_chat_lm)]
                + [arg for name, value in params.items() for arg in ("--param", f"{name}={value}")])
    assert code == 0
    for name in RESPONSE_OUTPUTS.values():
        assert (out / name).exists(), name

    event = json.loads((out / RESPONSE_OUTPUTS["event"]).read_text())
    assert event["event"] == "distilled_model_eval" and event["promote"] is False  # awaiting human review
    assert {"human_win_rate", "hallucination_rate", "cost_reduction"} <= set(event)
    report_html = (out / RESPONSE_OUTPUTS["report"]).read_text()
    assert "awaiting human review" in report_html and "guided choice" in report_html  # judged in the gate task
    packet = storage.read_table(str(out / RESPONSE_OUTPUTS["review_packet"]))
    assert validate_table(packet, REVIEW_PACKET, "packet", on_bad_rows="fail").table.num_rows == 6
    assert AutoModelForCausalLM.from_pretrained(out / RESPONSE_OUTPUTS["student"]).config.model_type == "llama"
    report = json.loads((out / RESPONSE_OUTPUTS["student_quantized"] / "response_quantization_report.json").read_text())
    assert set(report["models"]) == {"baseline", "int8", "nf4"}
    assert (workdir / "response_teacher_cache").is_dir(), "teacher answers are cached across runs"
