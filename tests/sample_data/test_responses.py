"""Response-scenario sample data: production prompts, human-corrected answers, refusals, the eval set."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from mangadistill.core.contracts import validate_table
from mangadistill.core.redaction import luhn_valid
from mangadistill.response.contracts import RESPONSE_EVAL
from mangadistill.response.dataset import normalise_prompt
from mangadistill.sample_data.catalog import catalog_records
from mangadistill.sample_data.responses import (
    CORRUPTIONS,
    INJECTIONS,
    PROMPT_MIX,
    REFUSAL_ANSWERS,
    REFUSAL_CATEGORIES,
    STORE_POLICY,
    card_number,
    corrupt_record,
    fact_answer,
    generate_human_corrected,
    generate_production_prompts,
    generate_refusal_escalation,
    response_eval_set,
)


@pytest.fixture(scope="module")
def prompts() -> list[dict]:
    return generate_production_prompts(2000, seed=3)


def test_prompts_are_deterministic_and_seed_dependent(prompts):
    assert generate_production_prompts(2000, seed=3) == prompts
    assert generate_production_prompts(200, seed=4)[:50] != prompts[:50]
    assert [p["prompt_id"] for p in prompts] == [f"prod-{i:06d}" for i in range(2000)]


def test_prompts_cover_every_category_near_the_mix(prompts):
    originals = [p for p in prompts if p["duplicate_of"] is None]
    counts = Counter(p["category"] for p in originals)
    for category, share in PROMPT_MIX.items():
        assert abs(counts[category] / len(originals) - share) < 0.05, category
    facts = Counter(p["fact"] for p in originals if p["category"] == "product_fact")
    assert set(facts) == {"author", "volumes", "price", "stock", "status"}


def test_product_fact_prompts_name_a_catalog_title(prompts):
    titles = {r["sku"]: r["title"] for r in catalog_records()}
    fact_prompts = [p for p in prompts if p["category"] == "product_fact" and p["duplicate_of"] is None]
    named = sum(titles[p["sku"]].lower()[:6] in p["prompt"].lower() for p in fact_prompts)
    assert named / len(fact_prompts) > 0.7  # the rest carry a typo in the title


def test_prompts_carry_personal_data_duplicates_and_injections(prompts):
    with_pii = Counter(kind for p in prompts for kind in p["pii_kinds"])
    assert set(with_pii) == {"email", "phone", "card", "address", "order"}
    assert 0.15 < sum(bool(p["pii_kinds"]) for p in prompts) / len(prompts) < 0.6
    by_id = {p["prompt_id"]: p for p in prompts}
    exact = [p for p in prompts if p["duplicate_kind"] == "exact"]
    near = [p for p in prompts if p["duplicate_kind"] == "near"]
    assert exact and near
    assert all(p["prompt"] == by_id[p["duplicate_of"]]["prompt"] for p in exact)
    for p in near:
        original = by_id[p["duplicate_of"]]["prompt"]
        assert p["prompt"] != original and normalise_prompt(p["prompt"]) == normalise_prompt(original)
    injected = [p for p in prompts if p["injection"]]
    assert injected
    assert all(any(normalise_prompt(text) in normalise_prompt(p["prompt"]) for text in INJECTIONS) for p in injected)


def test_generated_cards_pass_luhn():
    import random

    rng = random.Random(0)
    for _ in range(200):
        assert luhn_valid("".join(c for c in card_number(rng) if c.isdigit()))


def test_human_corrected_rows_differ_from_the_teacher_answer_they_fix():
    rows = generate_human_corrected(300, seed=1)
    assert rows == generate_human_corrected(300, seed=1)
    assert all(r["response"] != r["teacher_response"] for r in rows)
    assert set(Counter(r["mistake"] for r in rows)) == set(CORRUPTIONS)
    assert all(r["provenance"].startswith("human_review:") for r in rows)


def test_fact_answers_come_from_the_record():
    record = next(r for r in catalog_records() if r["title"] == "Naruto")
    assert "Masashi Kishimoto" in fact_answer("author", record)
    assert "72 volumes" in fact_answer("volumes", record)
    assert "$10.99" in fact_answer("price", record)
    assert "out of stock" in fact_answer("stock", record)
    import random

    wrong = corrupt_record(record, "wrong_volume_count", catalog_records(), random.Random(0))
    assert wrong["volumes"] != 72 and wrong["title"] == "Naruto"


def test_refusal_examples_take_the_right_action():
    rows = generate_refusal_escalation(70, seed=2)
    assert Counter(r["category"] for r in rows) == {category: 10 for category in REFUSAL_CATEGORIES}
    for row in rows:
        assert row["action"] == REFUSAL_CATEGORIES[row["category"]]
        assert row["response"] in REFUSAL_ANSWERS[row["category"]]
    handoffs = [r["response"] for r in rows if r["action"] == "handoff"]
    assert all("team" in text for text in handoffs)


def test_eval_set_is_fixed_with_the_three_slices():
    rows = response_eval_set()
    assert rows == response_eval_set()
    assert Counter(r["slice"] for r in rows) == {name: 40 for name in ("policy", "escalation", "factuality")}
    assert len({r["eval_id"] for r in rows}) == len(rows)
    validated = validate_table(pa.Table.from_pylist(rows), RESPONSE_EVAL, source="eval", on_bad_rows="fail")
    assert validated.table.num_rows == 120
    policy = [r for r in rows if r["slice"] == "policy"]
    assert all(r["reference_response"] in STORE_POLICY.values() for r in policy)
    escalation = [r for r in rows if r["slice"] == "escalation"]
    assert {r["expected_action"] for r in escalation} == {"refuse", "handoff"}
    assert all(r["sku"] for r in rows if r["slice"] == "factuality")
