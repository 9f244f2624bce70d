"""The response dataset stage: import, redaction first, de-duplication, split, mixture, curation."""

from __future__ import annotations

import json
import random
import re

import pyarrow as pa
import pytest

from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError, validate_table
from mangadistill.response.contracts import PREPARED_PROMPTS, RESPONSE_EXAMPLES, RESPONSE_REVIEW
from mangadistill.response.dataset import (
    DUPLICATE_REASON,
    FULL_MIXTURE,
    assign_split,
    build_training_mixture,
    curate_teacher_responses,
    mixture_targets,
    normalise_prompt,
    prepare_prompts,
    read_examples,
    read_prompts,
    run_response_dataset,
)
from mangadistill.sample_data.catalog import catalog_records
from mangadistill.sample_data.responses import (
    generate_human_corrected,
    generate_production_prompts,
    generate_refusal_escalation,
)

_RAW_PII = re.compile(r"@|\d{4}[ -]?\d{4}[ -]?\d{4}|\bMO[- ]?\d{8}|\(\d{3}\)")


@pytest.fixture(scope="module")
def prompts() -> list[dict]:
    return generate_production_prompts(1500, seed=21)


def _write_inputs(folder, prompts) -> tuple[str, str, str]:
    prompts_uri = str(folder / "prompts.jsonl")
    storage.write_table(pa.Table.from_pylist([{"prompt_id": p["prompt_id"], "prompt": p["prompt"]}
                                              for p in prompts]), prompts_uri)
    human_uri, refusal_uri = str(folder / "human.parquet"), str(folder / "refusal.parquet")
    storage.write_table(pa.Table.from_pylist(generate_human_corrected(120, seed=21)), human_uri)
    storage.write_table(pa.Table.from_pylist(generate_refusal_escalation(60, seed=21)), refusal_uri)
    return prompts_uri, human_uri, refusal_uri


def test_mixture_targets_scale_the_full_mixture():
    assert mixture_targets(1.0) == FULL_MIXTURE
    assert mixture_targets(0.01) == {"production_prompts": 250, "teacher_responses": 250, "human_corrected": 50,
                                     "refusal_escalation": 20}
    assert min(mixture_targets(1e-6).values()) == 1
    with pytest.raises(ValueError):
        mixture_targets(0)


def test_normalisation_and_split_are_stable():
    assert normalise_prompt("  Where is my ORDER?? ") == normalise_prompt("where is my order")
    assert normalise_prompt("where is my order") != normalise_prompt("wher is my order")
    splits = [assign_split(f"prompt {i}", 3, 0.2) for i in range(2000)]
    assert 0.15 < splits.count("validation") / 2000 < 0.25
    assert splits == [assign_split(f"prompt {i}", 3, 0.2) for i in range(2000)]


def test_stage_redacts_before_writing_and_deduplicates(tmp_path, prompts):
    inputs = _write_inputs(tmp_path, prompts)
    metrics = run_response_dataset(*inputs, output_dir=str(tmp_path / "out"), scale=0.1, seed=1)
    prepared = storage.read_table(str(tmp_path / "out" / "prompts.parquet"))
    validate_table(prepared, PREPARED_PROMPTS, source="prompts", on_bad_rows="fail")
    assert not any(_RAW_PII.search(text) for text in prepared.column("prompt").to_pylist())

    duplicates = sum(p["duplicate_of"] is not None for p in prompts)
    assert metrics["duplicates"] >= duplicates
    assert metrics["prompts"] + metrics["duplicates"] + metrics["not_selected"] == len(prompts)
    assert len({normalise_prompt(t) for t in prepared.column("prompt").to_pylist()}) == prepared.num_rows
    kept = {p["prompt_id"] for p in prompts} & set(prepared.column("prompt_id").to_pylist())
    inserted = {kind: 0 for kind in ("email", "card", "phone", "order", "address")}
    for p in prompts:
        for kind in p["pii_kinds"]:
            inserted[kind] += 1
    assert {k: metrics[f"redacted_{k}"] for k in inserted} == inserted
    assert all(p["duplicate_of"] is None or p["prompt_id"] not in kept for p in prompts if p["duplicate_kind"])

    quarantine = storage.read_table(str(tmp_path / "out" / "quarantine.parquet")).to_pylist()
    assert sum(q["reason"] == DUPLICATE_REASON for q in quarantine) == metrics["duplicates"]
    assert all(q["value"] in kept for q in quarantine if q["reason"] == DUPLICATE_REASON)

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    sources = manifest["sources"]
    assert sources["human_corrected"] == {"target": 500, "available": 120, "selected": 120, "shortfall": 380}
    assert sources["refusal_escalation"]["selected"] == 60
    assert sources["production_prompts"]["target"] == 2500
    human = storage.read_table(str(tmp_path / "out" / "human_corrected.parquet"))
    validate_table(human, RESPONSE_EXAMPLES, source="human", on_bad_rows="fail")
    assert set(human.column("source").to_pylist()) == {"human_corrected"}


def test_injection_text_stays_data(tmp_path, prompts):
    validated = read_prompts(_write_inputs(tmp_path, prompts)[0])
    prepared = prepare_prompts(validated, "prompts").table.to_pylist()
    injected = [r for r in prepared if "ignore your rules" in r["prompt"].lower()
                or "ignore all previous instructions" in r["prompt"].lower()]
    assert injected, "the sample has injection prompts and they are kept as ordinary prompts"


def test_cap_and_split_do_not_depend_on_file_order(tmp_path, prompts):
    rows = [{"prompt_id": p["prompt_id"], "prompt": p["prompt"]} for p in prompts if p["duplicate_of"] is None]
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    results = []
    for name, data in (("a", rows), ("b", shuffled)):
        uri = str(tmp_path / f"{name}.parquet")
        storage.write_table(pa.Table.from_pylist(data), uri)
        table = prepare_prompts(read_prompts(uri), uri, max_prompts=300, seed=4).table
        results.append(dict(zip(map(normalise_prompt, table.column("prompt").to_pylist()),
                                table.column("split").to_pylist(), strict=True)))
    assert results[0] == results[1] and len(results[0]) == 300


def test_missing_prompt_column_names_file_and_column(tmp_path):
    uri = str(tmp_path / "log.jsonl")
    (tmp_path / "log.jsonl").write_text(json.dumps({"text": "where is my order"}) + "\n")
    with pytest.raises(DataContractError) as error:
        read_prompts(uri)
    assert error.value.source == uri and error.value.column == "prompt"


def test_bad_rows_go_to_quarantine_with_reasons(tmp_path):
    uri = str(tmp_path / "log.jsonl")
    rows = [{"prompt": f"is Naruto volume {i} in stock"} for i in range(20)]
    rows[3]["prompt"] = "   "
    rows[7]["prompt"] = None
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    validated = read_prompts(uri)
    assert validated.reason_counts == {"empty text": 1, "missing value": 1}
    assert sorted(validated.quarantine.column("row").to_pylist()) == [3, 7]
    assert validated.table.column("prompt_id").to_pylist()[0] == "p-000000"


def test_examples_need_prompt_and_response(tmp_path):
    uri = str(tmp_path / "human.jsonl")
    (tmp_path / "human.jsonl").write_text(json.dumps({"prompt": "who wrote Naruto?"}) + "\n")
    with pytest.raises(DataContractError) as error:
        read_examples(uri, "human_corrected")
    assert error.value.column == "response"


def test_curation_keeps_supported_answers_reviews_the_rest_and_prefers_humans():
    corrected = generate_human_corrected(200, seed=8)
    teacher_rows = [{"prompt_id": f"t-{i}", "prompt": r["prompt"] + f" (#{i})", "response": r["teacher_response"],
                     "model": "teacher-x", "prompt_version": "v1"} for i, r in enumerate(corrected[:100])]
    teacher_rows += [{"prompt_id": f"t-ok-{i}", "prompt": r["prompt"] + f" [{i}]", "response": r["response"],
                      "model": "teacher-x", "prompt_version": "v1"} for i, r in enumerate(corrected[100:180])]
    teacher_rows += [{"prompt_id": "t-replaced", "prompt": corrected[190]["prompt"],
                      "response": corrected[190]["teacher_response"], "model": "teacher-x", "prompt_version": "v1"}]
    human = pa.Table.from_pylist([{k: corrected[190][k] for k in ("prompt_id", "prompt", "response")}])
    curation = curate_teacher_responses(pa.Table.from_pylist(teacher_rows), human, catalog_records())
    assert curation.metrics["replaced_by_human"] == 1
    assert curation.review.num_rows == 100 and curation.kept.num_rows == 80
    assert curation.review.schema.equals(RESPONSE_REVIEW)
    assert all(pid.startswith("t-ok-") for pid in curation.kept.column("prompt_id").to_pylist())
    assert set(curation.kept.column("provenance").to_pylist()) == {"teacher:teacher-x/v1"}
    assert curation.metrics["teacher_hallucination_rate"] == pytest.approx(100 / 180)


def test_mixture_follows_its_proportions_and_reports_shortfalls():
    def examples(source: str, n: int) -> pa.Table:
        return pa.Table.from_pylist([{"prompt_id": f"{source}-{i}", "prompt": f"{source} question {i}",
                                      "response": "ok", "source": source, "provenance": "test", "category": None}
                                     for i in range(n)], schema=RESPONSE_EXAMPLES)

    tables, manifest = build_training_mixture(examples("teacher", 400), examples("human_corrected", 80),
                                              examples("refusal_escalation", 10), scale=0.01, seed=2)
    sources = manifest["sources"]
    assert sources["teacher_responses"] == {"target": 250, "available": 400, "selected": 250, "shortfall": 0}
    assert sources["human_corrected"]["selected"] == 50
    assert sources["refusal_escalation"] == {"target": 20, "available": 10, "selected": 10, "shortfall": 10}
    assert sources["production_prompts"]["selected"] == 250
    total = tables["train"].num_rows + tables["validation"].num_rows
    assert total == manifest["rows"] == 310
    counts = {s: sum(manifest["splits"][split].get(s, 0) for split in manifest["splits"])
              for s in ("teacher", "human_corrected", "refusal_escalation")}
    assert counts == {"teacher": 250, "human_corrected": 50, "refusal_escalation": 10}
    sources_in_order = tables["train"].column("source").to_pylist()
    assert sources_in_order[:50].count("teacher") < 50  # shuffled, not source blocks
