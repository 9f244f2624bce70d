"""Cost measured side by side: teacher and student generate in one task on the same prompts, a warm-up each and
then rounds taking them in turn (ABAB); the medians price them, the per-round spread is reported, a missing or
NaN throughput fails the cost gate, and the report shows the cost table."""

import math
from pathlib import Path

import pyarrow as pa
import pytest
from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama

from mangadistill.core import storage
from mangadistill.core.benchmarking import torch_threads
from mangadistill.core.teacher_server import LocalChatModel
from mangadistill.response import factcheck
from mangadistill.response.contracts import MODEL_ANSWERS, RESPONSE_EVAL, TEACHER_RESPONSES
from mangadistill.response.gate import (
    ResponseGateConfig,
    SideBySideThroughput,
    measure_side_by_side,
    run_response_gate,
    self_hosted_cost_per_1k,
    serving_cost,
)
from mangadistill.response.stages import measure_gate_throughput
from mangadistill.sample_data.catalog import catalog_records
from mangadistill.sample_data.responses import response_eval_set

NEW_TOKENS = 3


@pytest.fixture(scope="module")
def chat_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny teacher (2 layers, width 64) and a tinier student (1 layer, width 32) from configs."""
    tokenizer = build_chat_tokenizer(PROMPTS + RESPONSES + ["system user assistant MangaAssist"], vocab_size=300)
    folder = tmp_path_factory.mktemp("chat-models")
    return {"teacher": build_tiny_llama(folder / "teacher", tokenizer, layers=2, hidden=64, intermediate=128),
            "student": build_tiny_llama(folder / "student", tokenizer, layers=1, hidden=32, intermediate=64)}


def _recording(backend: LocalChatModel, name: str, calls: list[tuple[str, int]]) -> LocalChatModel:
    """`backend` whose model records (name, new tokens) for every real `generate` call."""
    generate = backend.lm.generate

    def recorded(*args, **kwargs):
        output = generate(*args, **kwargs)
        calls.append((name, output.shape[1] - kwargs["input_ids"].shape[1]))
        return output

    backend.lm.generate = recorded
    return backend


def test_teacher_and_student_are_warmed_up_then_measured_in_turn(chat_models):
    calls: list[tuple[str, int]] = []
    backends = {name: _recording(LocalChatModel(str(folder)), name, calls) for name, folder in chat_models.items()}
    prompts = PROMPTS[:2]
    with torch_threads(1):
        measured = measure_side_by_side({name: (b.lm, b.tokenizer) for name, b in backends.items()}, prompts,
                                        max_new_tokens=NEW_TOKENS, repeats=3)
    # a warm-up call right before each model's first timed one; then prompt by prompt, teacher and student in turn
    expected = ["teacher", "teacher", "student", "student"] + ["teacher", "student"] * (3 * len(prompts) - 1)
    assert [name for name, _ in calls] == expected
    assert {tokens for _, tokens in calls} == {NEW_TOKENS}  # exactly max_new_tokens each, for both
    assert measured.repeats == 3 and measured.prompts == 2 and measured.max_new_tokens == NEW_TOKENS
    assert measured.device == "cpu"
    for name in ("teacher", "student"):
        assert len(measured.tokens_per_second[name]) == 3 and min(measured.tokens_per_second[name]) > 0
        median, low, high = measured.summary(name)
        assert low <= median <= high


def test_measure_side_by_side_needs_prompts_and_a_round(chat_models):
    backend = LocalChatModel(str(chat_models["student"]))
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_side_by_side({"student": (backend.lm, backend.tokenizer)}, PROMPTS[:1], repeats=0)
    with pytest.raises(ValueError, match="prompts"):
        measure_side_by_side({"student": (backend.lm, backend.tokenizer)}, [], repeats=1)


def test_medians_price_each_model_and_the_spread_comes_from_the_rounds():
    rounds = SideBySideThroughput({"student": (40.0, 50.0, 45.0), "teacher": (10.0, 8.0, 12.0)}, 3, 32, "cpu")
    assert rounds.summary("student") == (45.0, 40.0, 50.0) and rounds.summary("teacher") == (10.0, 8.0, 12.0)
    metrics = serving_cost(rounds, 0.72, 1.44, 100.0, 100.0, [0.0] * 3)
    # student: $0.72/h at 45 tokens/s and 100 tokens an answer is 1620 answers an hour; teacher $1.44/h at 10: 360
    assert metrics["student_cost_per_1k_usd"] == pytest.approx(0.72 / 1620 * 1000)
    assert metrics["teacher_cost_per_1k_usd"] == pytest.approx(4.0)
    assert metrics["cost_reduction"] == pytest.approx(1 - (0.72 / 1620 * 1000) / 4.0)
    per_round = [1 - self_hosted_cost_per_1k(0.72, s, 100.0) / self_hosted_cost_per_1k(1.44, t, 100.0)
                 for s, t in ((40.0, 10.0), (50.0, 8.0), (45.0, 12.0))]
    assert metrics["cost_reduction_spread"] == pytest.approx(max(per_round) - min(per_round))  # 0.92 - 0.8667
    assert metrics["cost_teacher_tokens_per_s_median"] == 10.0 and metrics["cost_teacher_tokens_per_s_min"] == 8.0
    assert metrics["cost_repeats"] == 3 and metrics["cost_prompts"] == 3 and metrics["cost_max_new_tokens"] == 32

    # a managed teacher is not measured: its recorded cost per call is its side, in every round
    managed = serving_cost(SideBySideThroughput({"student": (40.0, 50.0, 45.0)}, 3, 32, "cpu"), 0.72, None, 100.0,
                           60.0, [0.002, 0.004])
    assert managed["teacher_cost_per_1k_usd"] == pytest.approx(3.0)
    assert managed["cost_teacher_tokens_per_s_median"] is None
    reductions = [1 - self_hosted_cost_per_1k(0.72, s, 100.0) / 3.0 for s in (40.0, 50.0, 45.0)]
    assert managed["cost_reduction_spread"] == pytest.approx(max(reductions) - min(reductions))


@pytest.mark.parametrize(("measured", "reason"), [
    (None, "student cost unknown"),
    (SideBySideThroughput({"student": (float("nan"),) * 3, "teacher": (10.0,) * 3}, 3, 32, "cpu"),
     "student cost unknown"),
    (SideBySideThroughput({"student": (40.0,) * 3, "teacher": (float("nan"),) * 3}, 3, 32, "cpu"),
     "teacher cost unknown"),
])
def test_a_missing_or_nan_throughput_fails_the_cost_gate(tmp_path, measured, reason):
    outcome = _gate(tmp_path, measured, teacher_hardware="gcp-n2-standard-4")
    assert math.isnan(outcome.metrics["cost_reduction"]) and math.isnan(outcome.metrics["cost_reduction_spread"])
    cost = next(result for result in outcome.decision.results if result.metric == "cost_reduction")
    assert not cost.passed and cost.reason.startswith(f"NaN metric: {reason}")
    assert outcome.event["cost_reduction"] is None and outcome.event["cost_reduction_spread"] is None


def test_the_report_shows_the_cost_table_measured_side_by_side(tmp_path):
    measured = SideBySideThroughput({"student": (40.0, 50.0, 45.0), "teacher": (10.0, 8.0, 12.0)}, 3, 32, "cpu")
    outcome = _gate(tmp_path, measured, teacher_hardware="gcp-n2-standard-4")
    html = (tmp_path / "report.html").read_text()
    assert "Cost per 1K responses, measured side by side" in html
    for cell in ("tokens/s median", "tokens/s min – max", "rounds × prompts × tokens", "USD per 1K responses",
                 "40 – 50", "8 – 12", "3 × 3 × 32", "measured side by side on cpu, priced as gcp-n2-standard-4",
                 "per-round spread", "ABAB"):
        assert cell in html, cell
    assert f"{outcome.metrics['cost_reduction']:.4g}" in html
    assert outcome.event["cost_teacher_tokens_per_s_median"] == 10.0 and outcome.event["cost_repeats"] == 3

    managed = _gate(tmp_path, SideBySideThroughput({"student": (45.0,) * 3}, 3, 32, "cpu"),
                    teacher_base_url="https://api.example.com/v1")
    html = (tmp_path / "report.html").read_text()
    assert "recorded usage cost per call (managed API at https://api.example.com/v1)" in html
    assert "The teacher is a managed API" in html and managed.metrics["teacher_cost_per_1k_usd"] == pytest.approx(2.0)


@pytest.mark.parametrize("teacher", [{"teacher_model": "smollm2-135m", "teacher_base_url": "http://vllm:8000/v1"},
                                     {"teacher_model": ""}])
def test_teacher_hardware_needs_a_teacher_the_task_can_load(tmp_path, teacher):
    config = ResponseGateConfig(teacher_hardware="gcp-n2-standard-4", **teacher)
    with pytest.raises(ValueError, match="teacher_hardware prices a teacher measured in this task"):
        measure_gate_throughput(config, response_eval_set(per_slice=1), str(tmp_path), str(tmp_path))


def _gate(tmp_path, measured: SideBySideThroughput | None, **config):
    """The response gate on fixed answers (student 40 tokens, teacher 60 at a recorded $0.002 each) and
    `measured`."""
    rows = response_eval_set(per_slice=1)
    uris = {name: str(tmp_path / f"{name}.parquet") for name in ("eval", "student", "base", "teacher")}
    storage.write_table(pa.Table.from_pylist(rows, schema=RESPONSE_EVAL), uris["eval"])
    for name in ("student", "base"):
        storage.write_table(pa.Table.from_pylist(
            [{"eval_id": row["eval_id"], "response": row["reference_response"], "completion_tokens": 40}
             for row in rows], schema=MODEL_ANSWERS), uris[name])
    storage.write_table(pa.Table.from_pylist(
        [{"prompt_id": row["eval_id"], "prompt": row["prompt"], "response": row["reference_response"],
          "model": "teacher", "prompt_version": "p1+r1", "retrieved_skus": [], "prompt_tokens": 500,
          "completion_tokens": 60, "cost_usd": 0.002, "cached": False, "latency_s": 1.0, "cache_key": f"k{i}"}
         for i, row in enumerate(rows)], schema=TEACHER_RESPONSES), uris["teacher"])
    return run_response_gate(
        uris["eval"], uris["student"], uris["base"], uris["teacher"], str(tmp_path / "report.html"),
        str(tmp_path / "event.json"), str(tmp_path / "packet.parquet"), str(tmp_path / "key.parquet"),
        factcheck.CatalogIndex(catalog_records()),
        ResponseGateConfig(student_hardware="gcp-n2-standard-2", **config), throughput=measured)
