"""Reranker sample data: seeded queries, graded judgments from catalog facts, candidates, splits, contracts."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError, validate_table
from mangadistill.core.retrieval import CatalogIndex
from mangadistill.reranker.contracts import (
    RERANK_CANDIDATES,
    RERANK_QUERIES,
    RERANK_TEACHER_SCORES,
    check_query_coverage,
)
from mangadistill.sample_data.catalog import catalog_records
from mangadistill.sample_data.queries import (
    Constraint,
    ShoppingQuery,
    build_reranker_splits,
    generate_queries,
    generate_reranker_data,
    judged_candidates,
)

K = 20


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return catalog_records()


@pytest.fixture(scope="module")
def splits(records) -> dict[str, pa.Table]:
    return build_reranker_splits(seed=3, n_train=40, n_production=40, n_eval=30, k=K, records=records)


def test_grading_rule_counts_met_constraints_and_excludes_x():
    is_horror = Constraint("genre: horror", lambda r: "horror" in r["genres"])
    is_short = Constraint("format: short", lambda r: r["volumes"] <= 10)
    is_seinen = Constraint("audience", lambda r: r["demographic"] == "seinen")
    query = ShoppingQuery("q", "short seinen horror", "facets", (is_horror, is_short, is_seinen), frozenset({"X"}))
    record = {"sku": "A", "genres": ["horror"], "volumes": 5, "demographic": "seinen"}
    assert query.grade(record) == 3
    assert query.grade({**record, "volumes": 40}) == 2
    assert query.grade({**record, "volumes": 40, "demographic": "shojo"}) == 1
    assert query.grade({**record, "volumes": 40, "demographic": "shojo", "genres": ["comedy"]}) == 0
    assert query.grade({**record, "sku": "X"}) == 0
    two = ShoppingQuery("q2", "short horror", "facets", (is_horror, is_short))
    assert two.grade({**record, "volumes": 40}) == 1  # one of two is "one", not "most"


def test_generation_is_deterministic_and_seed_dependent(records):
    first = [q.text for q in generate_queries(30, 1, records, "train")]
    assert first == [q.text for q in generate_queries(30, 1, records, "train")]
    assert first != [q.text for q in generate_queries(30, 2, records, "train")]


def test_every_query_has_a_fully_relevant_item_and_like_queries_exclude_x(records):
    queries = generate_queries(150, 5, records, "eval")
    kinds = {q.kind for q in queries}
    assert kinds == {"facets", "author", "like", "like_but"}
    for query in queries:
        assert any(query.grade(r) == 3 for r in records), query.text
        if query.kind.startswith("like"):
            (excluded,) = query.excluded
            x = next(r for r in records if r["sku"] == excluded)
            assert query.constraints[0].description.startswith(f"similar to {x['title']}:")
            assert query.grade(x) == 0


def test_queries_cover_the_facets_a_shopper_uses(records):
    descriptions = " ".join(c.description for q in generate_queries(300, 9, records, "train") for c in q.constraints)
    for facet in ("genre:", "theme:", "mood:", "audience:", "format:", "author:", "similar to"):
        assert facet in descriptions


def test_query_texts_never_repeat_across_splits(splits):
    texts = [t for split in ("train", "production", "eval") for t in splits[f"{split}_queries"]["query"].to_pylist()]
    assert len(texts) == len(set(texts))


def test_labelled_candidates_hold_bm25_top_k_plus_every_missed_strong_match(splits, records):
    candidates = splits["eval_candidates"].to_pylist()
    queries = {q["query_id"]: q for q in splits["eval_queries"].to_pylist()}
    index = CatalogIndex.from_records(records)
    for query_id in queries:
        rows = [row for row in candidates if row["query_id"] == query_id]
        ranks = [row["retrieval_rank"] for row in rows if row["retrieval_rank"] is not None]
        assert ranks == list(range(1, K + 1))
        assert [row["sku"] for row in rows[:K]] == [sku for sku, _ in index.search(rows[0]["query"], K)]
        added = [row for row in rows if row["retrieval_rank"] is None]
        assert all(row["relevance"] >= 2 for row in added)
        assert len({row["sku"] for row in rows}) == len(rows)


def test_missed_strong_matches_are_all_judged_when_under_the_cap(records):
    index = CatalogIndex.from_records(records)
    query = ShoppingQuery("q", "zzz", "facets", (Constraint("genre: horror", lambda r: "horror" in r["genres"]),))
    rows = judged_candidates(query, records, index, k=50)
    horror = {r["sku"] for r in records if "horror" in r["genres"]}
    assert horror <= {row["sku"] for row in rows}
    capped = judged_candidates(query, records, index, k=5)
    assert len(capped) == 10 and sum(row["retrieval_rank"] is None for row in capped) == 5


def test_production_is_unlabelled_bm25_top_k_with_a_separate_truth(splits):
    production, truth = splits["production_candidates"], splits["production_truth"]
    assert production.column("relevance").null_count == production.num_rows
    assert truth.column("relevance").null_count == 0
    assert production.column("sku").to_pylist() == truth.column("sku").to_pylist()
    assert production.num_rows == K * splits["production_queries"].num_rows


def test_generate_reranker_data_writes_valid_parquet(tmp_path):
    paths = generate_reranker_data(str(tmp_path), seed=1, n_train=5, n_production=5, n_eval=5, k=10)
    assert set(paths) == {"train_queries", "train_candidates", "production_queries", "production_candidates",
                          "production_truth", "eval_queries", "eval_candidates"}
    for name, uri in paths.items():
        schema = RERANK_QUERIES if name.endswith("queries") else RERANK_CANDIDATES
        validated = validate_table(storage.read_table(uri), schema, uri)
        assert validated.quarantine.num_rows == 0, validated.reason_counts


# --- contracts (schemas.py reranker section) ---------------------------------------------------------------

def _teacher_rows(n: int = 6) -> list[dict]:
    return [{"query_id": f"q{i // 3}", "query": "romance manga with adult cast", "sku": f"MA-{i:05d}",
             "candidate": "Nana", "candidate_text": "Nana. Josei.", "teacher_score": 0.94, "relevance": 3}
            for i in range(n)]


def test_teacher_scores_quarantine_nan_out_of_range_and_duplicate_pairs():
    rows = _teacher_rows(12)
    rows[1]["teacher_score"] = math.nan
    rows[4]["teacher_score"] = 1.5
    rows[7] = {**rows[6]}
    validated = validate_table(pa.Table.from_pylist(rows), RERANK_TEACHER_SCORES, "scores.parquet",
                               max_bad_fraction=0.5)
    reasons = dict(zip(validated.quarantine["row"].to_pylist(), validated.quarantine["reason"].to_pylist(),
                       strict=True))
    assert reasons == {1: "NaN teacher score", 4: "teacher score outside [0, 1]",
                       7: "duplicate (query_id, sku) pair"}
    assert validated.quarantine["message_id"].to_pylist()[2] == "q2|MA-00006"
    assert validated.table.num_rows == 9


def test_bad_relevance_and_too_many_bad_rows_raise_naming_column_and_row():
    rows = _teacher_rows()
    rows[2]["relevance"] = 7
    with pytest.raises(DataContractError, match=r"scores.parquet, column 'relevance', row 2: relevance not one of"):
        validate_table(pa.Table.from_pylist(rows), RERANK_TEACHER_SCORES, "scores.parquet", on_bad_rows="fail")


def test_query_without_candidates_is_quarantined():
    queries = pa.Table.from_pylist(
        [{"query_id": q, "query": "x", "split": "eval", "kind": "facets", "constraints": []} for q in ("q0", "q9")],
        schema=RERANK_QUERIES)
    covered = check_query_coverage(queries, pa.Table.from_pylist(_teacher_rows()), "queries.parquet")
    assert covered.table["query_id"].to_pylist() == ["q0"]
    assert covered.reason_counts == {"query has no candidates": 1}
    assert covered.quarantine["message_id"].to_pylist() == ["q9"]
