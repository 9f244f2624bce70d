"""response_gate_check alone with kfp.local: a tiny student and base student answer the eval set, the student's
throughput is measured in the task (the teacher is a managed API: its recorded cost), a fake judge API asked
with guided choice judges both orders, and without human reviews the student is not promoted."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pytest
from fakes import PROMPTS, RESPONSES, FakeChatServer, build_chat_tokenizer, build_tiny_llama
from kfp import dsl, local
from kfp.dsl import HTML, Artifact, Dataset, Metrics

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.response.contracts import MODEL_ANSWERS, RESPONSE_EVAL, REVIEW_PACKET, TEACHER_RESPONSES
from mangadistill.response.gate import EVENT_METRICS, JUDGE_CHOICES
from mangadistill.sample_data.responses import response_eval_set
from mangadistill_components.response.gate_check import response_gate_check


class GateOutputs(NamedTuple):
    metrics: Metrics
    report: HTML
    event: Artifact
    review_packet: Dataset
    eval_answers: Dataset
    promote: bool


@dsl.pipeline(name="response-gate-check-alone")
def gate_alone(eval_uri: str, teacher_uri: str, student_uri: str, quantized_uri: str, judge_url: str) -> GateOutputs:
    task = response_gate_check(
        eval_set=dsl.importer(artifact_uri=eval_uri, artifact_class=dsl.Dataset).output,
        eval_teacher_answers=dsl.importer(artifact_uri=teacher_uri, artifact_class=dsl.Dataset).output,
        student=dsl.importer(artifact_uri=student_uri, artifact_class=dsl.Model).output,
        quantized=dsl.importer(artifact_uri=quantized_uri, artifact_class=dsl.Model).output,
        base_student_model=student_uri, student_hardware="gcp-n2-standard-2", judge_base_url=judge_url,
        judge_model="judge-model", judge_guided_choice=True, judge_structured_api="guided",  # an older vLLM
        judge_calibration_pairs=3, proxy_model="",
        max_new_tokens=4,
        teacher_base_url="https://api.example.com/v1", cost_prompts=1, cost_max_new_tokens=4, cost_repeats=2,
    )
    return GateOutputs(*(task.outputs[name] for name in GateOutputs._fields))


@pytest.fixture
def judge_api(monkeypatch) -> Iterator[FakeChatServer]:
    for name in ("NO_PROXY", "no_proxy"):  # the task's subprocess reaches the fake API on 127.0.0.1
        monkeypatch.setenv(name, "127.0.0.1")
    server = FakeChatServer(reply=lambda text: '{"winner": "tie"}')
    yield server
    server.close()


def test_the_student_is_measured_judged_and_held_for_human_review(tmp_path, judge_api):
    rows = response_eval_set(per_slice=1)
    eval_uri, teacher_uri = str(tmp_path / "eval.parquet"), str(tmp_path / "teacher.parquet")
    storage.write_table(pa.Table.from_pylist(rows, schema=RESPONSE_EVAL), eval_uri)
    storage.write_table(pa.Table.from_pylist([
        {"prompt_id": row["eval_id"], "prompt": row["prompt"], "response": row["reference_response"],
         "model": "managed-teacher", "prompt_version": "p+r", "retrieved_skus": [], "prompt_tokens": 400,
         "completion_tokens": 60, "cost_usd": 0.002, "cached": False, "latency_s": 1.0, "cache_key": f"k{i}"}
        for i, row in enumerate(rows)], schema=TEACHER_RESPONSES), teacher_uri)
    tokenizer = build_chat_tokenizer(PROMPTS + RESPONSES + ["system user assistant MangaAssist"], vocab_size=300)
    student = build_tiny_llama(tmp_path / "student", tokenizer, layers=2, hidden=32, intermediate=64,
                               max_positions=1024, tie_embeddings=False)
    quantized = tmp_path / "quantized"  # the baseline variant is served: no bitsandbytes folder is read
    quantized.mkdir()

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = gate_alone(eval_uri=eval_uri, teacher_uri=teacher_uri, student_uri=str(student),
                     quantized_uri=str(quantized), judge_url=judge_api.base_url)

    assert run.outputs["promote"] is False  # awaiting human review
    event = json.loads(Path(run.outputs["event"].path).read_text())
    assert event["promote"] is False and set(EVENT_METRICS) <= set(event)
    metrics = run.outputs["metrics"].metadata
    assert metrics["judge_judgments"] == 2 * len(rows) and metrics["judge_calibration_pairs"] == 3
    # an always-tie judge matches the teacher 100%, but κ = 0 on the hand-judged pairs: not trusted
    assert metrics["teacher_preference_match_untrusted"] == 1.0 and "teacher_preference_match" not in metrics
    assert {tuple(request["request"]["guided_choice"]) for request in judge_api.requests} == {JUDGE_CHOICES}
    assert not any("structured_outputs" in request["request"] for request in judge_api.requests)
    assert metrics["cost_repeats"] == 2 and metrics["cost_student_tokens_per_s_median"] > 0
    assert "cost_teacher_tokens_per_s_median" not in metrics and metrics["cost_reduction"] < 1  # managed teacher
    assert event["cost_teacher_tokens_per_s_median"] is None and event["cost_repeats"] == 2
    answers = Path(run.outputs["eval_answers"].path)
    for name in ("student", "base_student"):
        table = storage.read_table(str(answers / f"{name}.parquet"))
        assert validate_table(table, MODEL_ANSWERS, name, on_bad_rows="fail").table.num_rows == len(rows)
    assert storage.read_table(str(answers / "judgments.parquet")).num_rows == 2 * len(rows)
    packet = storage.read_table(run.outputs["review_packet"].path)
    assert validate_table(packet, REVIEW_PACKET, "packet", on_bad_rows="fail").table.num_rows == len(rows)
    assert "awaiting human review" in Path(run.outputs["report"].path).read_text()
