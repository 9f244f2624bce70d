"""The response pipeline's stages chained on tiny models: dataset -> teacher labeling over HTTP (a fake managed
API, and a local model served in-process) -> curation -> LoRA training -> bitsandbytes -> evaluation and gate."""

import json
import math
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
from fakes import PROMPTS, RESPONSES, FakeChatServer, build_chat_tokenizer, build_tiny_llama

from mangadistill.core import storage
from mangadistill.core.benchmarking import torch_threads
from mangadistill.core.contracts import DataContractError, validate_table
from mangadistill.response.contracts import (
    PREPARED_PROMPTS,
    RESPONSE_EXAMPLES,
    RESPONSE_REVIEW,
    REVIEW_PACKET,
    TEACHER_RESPONSES,
)
from mangadistill.response.gate import EVENT_METRICS, JUDGE_CHOICES, ResponseGateConfig
from mangadistill.response.labeling import ResponseLabelingConfig
from mangadistill.response.stages import (
    run_response_curation,
    run_response_dataset_stage,
    run_response_gate_check,
    run_response_quantization,
    run_response_teacher_labeling,
    run_response_training,
)
from mangadistill.response.training import ResponseTrainConfig
from mangadistill.sample_data.catalog import catalog_records
from mangadistill.sample_data.responses import (
    fact_answer,
    generate_human_corrected,
    generate_production_prompts,
    generate_refusal_escalation,
    response_eval_set,
)

_RAW_PII = re.compile(r"@|\d{4}[ -]?\d{4}[ -]?\d{4}|\bMO[- ]?\d{8}|\(\d{3}\)")
API_KEY = "test-key-from-the-secret"
SCALE = 0.002  # 50 prompts and teacher responses, 10 human-corrected, 4 refusal/escalation


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; several threads stall on shared cores."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("response-data")
    prompts = generate_production_prompts(60, seed=5)
    paths = {name: str(folder / f"{name}.{ext}") for name, ext in
             (("prompts", "jsonl"), ("human", "parquet"), ("refusal", "parquet"), ("eval", "parquet"))}
    storage.write_table(pa.Table.from_pylist([{"prompt": p["prompt"], "category": p["category"]} for p in prompts]),
                        paths["prompts"])
    storage.write_table(pa.Table.from_pylist(generate_human_corrected(12, seed=5)), paths["human"])
    storage.write_table(pa.Table.from_pylist(generate_refusal_escalation(6, seed=5)), paths["refusal"])
    storage.write_table(pa.Table.from_pylist(response_eval_set(per_slice=2)), paths["eval"])
    return paths


@pytest.fixture(scope="module")
def dataset(data, tmp_path_factory) -> tuple[dict[str, str], dict[str, float]]:
    out = tmp_path_factory.mktemp("dataset")
    uris = {name: str(out / f"{name}.parquet") for name in ("prompts", "human", "refusal", "quarantine")}
    uris["manifest"] = str(out / "manifest.json")
    metrics = run_response_dataset_stage(
        data["prompts"], data["human"], data["refusal"], uris["prompts"], uris["human"], uris["refusal"],
        uris["quarantine"], uris["manifest"], scale=SCALE, validation_fraction=0.2, seed=1)
    return uris, metrics


@pytest.fixture
def fake_api(monkeypatch) -> Iterator[FakeChatServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("TEACHER_API_KEY", API_KEY)
    server = FakeChatServer(latency_s=0.02)
    yield server
    server.close()


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """A tiny chat llama whose greedy replies are not blank (untied embeddings), with room for the grounded
    teacher prompt."""
    tokenizer = build_chat_tokenizer(PROMPTS + RESPONSES + ["system user assistant MangaAssist"], vocab_size=400)
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-lm"), tokenizer, layers=2, hidden=128, intermediate=256,
                            tie_embeddings=False, max_positions=4096)


def test_dataset_stage_redacts_splits_and_scales_the_mixture(dataset):
    uris, metrics = dataset
    prepared = validate_table(storage.read_table(uris["prompts"]), PREPARED_PROMPTS, "prompts", on_bad_rows="fail")
    texts = prepared.table.column("prompt").to_pylist()
    assert not any(_RAW_PII.search(text) for text in texts)
    assert sum(metrics[name] for name in metrics if name.startswith("redacted_")) > 0
    assert metrics["prompts"] == 50 and metrics["human_corrected"] == 10 and metrics["refusal_escalation"] == 4
    manifest = json.loads(Path(uris["manifest"]).read_text())
    assert manifest["sources"]["human_corrected"]["target"] == 10
    quarantine = storage.read_table(uris["quarantine"])
    assert quarantine.num_rows == metrics["quarantined_rows"] >= metrics["duplicates"]


def test_labeling_through_the_api_sends_only_redacted_text_with_the_secret_key_and_caches(
        dataset, fake_api, tmp_path):
    uris, _ = dataset
    config = ResponseLabelingConfig("gpt-4o-mini", base_url=fake_api.base_url, cache_uri=str(tmp_path / "cache"),
                                    concurrency=4)
    first = run_response_teacher_labeling(uris["prompts"], str(tmp_path / "r1.parquet"), str(tmp_path / "q1.parquet"),
                                          config)
    assert first["labelled"] == first["teacher_calls"] == 50 and first["cost_usd"] > 0
    assert all(r["auth"] == f"Bearer {API_KEY}" for r in fake_api.requests)
    assert not any(_RAW_PII.search(r["text"]) for r in fake_api.requests)
    assert first["client_pii_refused"] == 0 and "client_redacted_email" in first  # the client's own count, logged
    responses = validate_table(storage.read_table(str(tmp_path / "r1.parquet")), TEACHER_RESPONSES, "r1",
                               on_bad_rows="fail").table
    assert responses.num_rows == 50 and not any(responses.column("cached").to_pylist())

    sent = len(fake_api.requests)
    again = run_response_teacher_labeling(uris["prompts"], str(tmp_path / "r2.parquet"), str(tmp_path / "q2.parquet"),
                                          config)
    assert again["teacher_calls"] == 0 and again["cache_hits"] == 50 and len(fake_api.requests) == sent
    assert again["recorded_cost_usd"] == pytest.approx(first["cost_usd"])


def test_eval_prompts_are_labelled_by_a_local_model_served_over_http(data, tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    out = str(tmp_path / "teacher_eval.parquet")
    config = ResponseLabelingConfig(str(tiny_lm), cache_uri=str(tmp_path / "cache"), max_new_tokens=6)
    metrics = run_response_teacher_labeling(data["eval"], out, str(tmp_path / "q.parquet"), config)
    answers = storage.read_table(out)
    assert answers.num_rows + metrics["quarantined"] == 6
    assert set(answers.column("prompt_id").to_pylist()) <= {row["eval_id"] for row in response_eval_set(per_slice=2)}
    assert set(answers.column("cost_usd").to_pylist()) == {0.0}
    assert 0 < metrics["teacher_tokens_per_second"] == pytest.approx(
        sum(answers.column("completion_tokens").to_pylist()) / sum(answers.column("latency_s").to_pylist()))


def test_curation_keeps_teacher_mistakes_out_and_prefers_the_human_answer(tmp_path):
    human = generate_human_corrected(8, seed=9)
    human_rows = [{**row, "source": "human_corrected"} for row in human[:4]]
    teacher_rows = []
    for i, row in enumerate(human):  # 0-3: the human corrected them; 4-7: the teacher's wrong answer only
        teacher_rows.append({"prompt_id": f"t-{i}", "prompt": row["prompt"], "response": row["teacher_response"],
                             "model": "gpt-4o-mini", "prompt_version": "v", "retrieved_skus": [],
                             "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": 0.001, "cached": False,
                             "latency_s": 0.1, "cache_key": f"k{i}"})
    for i, record in enumerate(catalog_records()[:6]):  # right answers from the catalog: kept
        teacher_rows.append({**teacher_rows[0], "prompt_id": f"g-{i}", "cache_key": f"g{i}",
                             "prompt": f"how many volumes of {record['title']}",
                             "response": fact_answer("volumes", record)})
    paths = {name: str(tmp_path / f"{name}.parquet") for name in ("teacher", "human", "refusal", "train",
                                                                   "validation", "review", "quarantine")}
    storage.write_table(pa.Table.from_pylist(teacher_rows, schema=TEACHER_RESPONSES), paths["teacher"])
    storage.write_table(pa.Table.from_pylist(human_rows).select(RESPONSE_EXAMPLES.names), paths["human"])
    storage.write_table(pa.Table.from_pylist([{**r, "source": "refusal_escalation"} for r in
                                              generate_refusal_escalation(3, seed=9)]).select(RESPONSE_EXAMPLES.names),
                        paths["refusal"])
    metrics = run_response_curation(paths["teacher"], paths["human"], paths["refusal"], paths["train"],
                                    paths["validation"], paths["review"], str(tmp_path / "manifest.json"),
                                    paths["quarantine"], scale=1.0, validation_fraction=0.0)
    assert metrics["replaced_by_human"] == 4 and metrics["unsupported"] >= 3
    review = validate_table(storage.read_table(paths["review"]), RESPONSE_REVIEW, "review", on_bad_rows="fail").table
    train = storage.read_table(paths["train"]).to_pylist()
    trained_responses = {row["response"] for row in train}
    assert not trained_responses & set(review.column("response").to_pylist())
    assert not trained_responses & {row["teacher_response"] for row in human[:4]}
    assert {row["response"] for row in human[:4]} <= trained_responses
    assert {row["source"] for row in train} == {"teacher", "human_corrected", "refusal_escalation"}
    assert all(finding for findings in review.column("findings").to_pylist() for finding in findings)


def test_train_quantize_and_gate_on_tiny_models(data, tiny_lm, fake_api, tmp_path):
    train_uri = str(tmp_path / "train.parquet")
    storage.write_table(pa.Table.from_pylist(
        [{"prompt_id": f"p{i}", "prompt": p, "response": r, "source": "teacher", "provenance": "t", "category": None}
         for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True))], schema=RESPONSE_EXAMPLES), train_uri)
    student = tmp_path / "student"
    config = ResponseTrainConfig(student_model=str(tiny_lm), max_steps=2, batch_size=3, max_length=64, lora_r=4,
                                 warmup_ratio=0.0)
    trained = run_response_training(train_uri, str(student), str(tmp_path / "quarantine.parquet"), config)
    assert trained["steps"] == 2 and trained["train_rows"] == 6 and trained["final_loss"] > 0

    quantized = tmp_path / "quantized"
    figures = run_response_quantization(str(student), str(quantized), data["eval"], prompts=1, max_new_tokens=3,
                                        threads=1)
    assert figures["nf4_size_on_disk_ratio"] < 1 and figures["baseline_tokens_per_second"] > 0

    teacher_answers = str(tmp_path / "teacher_eval.parquet")
    run_response_teacher_labeling(data["eval"], teacher_answers, str(tmp_path / "q.parquet"),
                                  ResponseLabelingConfig("gpt-4o-mini", base_url=fake_api.base_url,
                                                         cache_uri=str(tmp_path / "cache")))
    out = {name: str(tmp_path / name) for name in ("report.html", "event.json", "packet.parquet", "key.parquet",
                                                   "answers")}
    gate = ResponseGateConfig(base_student_model=str(tiny_lm), max_new_tokens=4, student_hardware="gcp-n2-standard-2",
                              teacher_model=str(tiny_lm), teacher_hardware="gcp-n2-standard-4", cost_prompts=2,
                              cost_max_new_tokens=4, judge_calibration_pairs=4)
    outcome = run_response_gate_check(  # no judge URL: served in the task, asked over HTTP with guided choice
        data["eval"], teacher_answers, str(student), str(quantized), out["report.html"], out["event.json"],
        out["packet.parquet"], out["key.parquet"], out["answers"], replace(gate, judge_model=str(tiny_lm)))
    event = json.loads(Path(out["event.json"]).read_text())
    assert event["event"] == "distilled_model_eval" and set(EVENT_METRICS) <= set(event)
    assert event["promote"] is False and outcome.promote is False  # no human review yet
    assert outcome.judgments.num_rows == 2 * 6 and outcome.metrics["judge_failed_judgments"] == 0
    assert storage.read_table(f"{out['answers']}/judgments.parquet").num_rows == 2 * 6
    assert storage.read_table(f"{out['answers']}/student.parquet").num_rows == 6
    assert set(outcome.judgments.column("winner").to_pylist()) <= {"A", "B", "tie"}
    assert outcome.metrics["judge_calibration_pairs"] == 4  # the judge was checked on hand-judged pairs first
    match, untrusted = (outcome.metrics.get(name) for name in ("teacher_preference_match",
                                                               "teacher_preference_match_untrusted"))
    assert (match is None) != (untrusted is None), "withheld exactly when the judge failed its calibration"
    assert 0 <= (untrusted if match is None else match) <= 1
    # the self-hosted teacher and the student measured side by side in the task, 3 rounds each
    assert outcome.metrics["cost_repeats"] == 3 and outcome.metrics["cost_prompts"] == 2
    assert min(outcome.metrics[f"cost_{name}_tokens_per_s_median"] for name in ("teacher", "student")) > 0
    assert outcome.metrics["teacher_cost_per_1k_usd"] > 0 and math.isfinite(outcome.metrics["cost_reduction"])
    packet = validate_table(storage.read_table(out["packet.parquet"]), REVIEW_PACKET, "packet", on_bad_rows="fail")
    assert packet.table.num_rows == 6
    report = Path(out["report.html"]).read_text()
    assert "awaiting human review" in report and "guided choice" in report

    judge_api = FakeChatServer(reply=lambda text: '{"winner": "tie"}')  # a vLLM judge asked with guided choice
    try:
        remote = run_response_gate_check(
            data["eval"], teacher_answers, str(student), str(quantized), out["report.html"], out["event.json"],
            out["packet.parquet"], out["key.parquet"], out["answers"],
            replace(gate, judge_base_url=judge_api.base_url, judge_model="judge-model", judge_guided_choice=True,
                    served_variant="nf4"))
    finally:
        judge_api.close()
    # every verdict a tie: κ = 0 on the hand-judged pairs, so the match of 1.0 is not trusted
    assert remote.metrics["teacher_preference_match"] is None
    assert remote.metrics["teacher_preference_match_untrusted"] == 1.0
    assert remote.metrics["judge_calibration_kappa"] == 0
    assert remote.metrics["cost_student_tokens_per_s_median"] > 0  # the NF4 folder, measured side by side
    assert {tuple(r["request"]["structured_outputs"]["choice"]) for r in judge_api.requests} == {JUDGE_CHOICES}


def test_a_prompts_file_without_a_prompt_column_is_a_clear_error(tmp_path):
    bad = str(tmp_path / "bad.jsonl")
    storage.write_table(pa.Table.from_pylist([{"prompt_id": "p1", "text": "is nana in stock?"}]), bad)
    with pytest.raises(DataContractError, match="prompt") as error:
        run_response_teacher_labeling(bad, str(tmp_path / "r.parquet"), str(tmp_path / "q.parquet"),
                                      ResponseLabelingConfig("gpt-4o-mini", base_url="http://127.0.0.1:9/v1"))
    assert bad in str(error.value)
