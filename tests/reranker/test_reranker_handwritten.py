"""The hand-written reranker set in the gate: loading and its errors, the BM25 pools, the text the models read,
and the gates on it with fake scorers (a query-blind student fails, a query-reading one passes the blind checks)."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Sequence
from functools import partial

import numpy as np
import pyarrow as pa
import pytest

from mangadistill.core.contracts import DataContractError
from mangadistill.core.gates import evaluate_gates, load_gates, packaged_gates_path
from mangadistill.core.retrieval import CatalogIndex, catalog_document, tokenize
from mangadistill.reranker.gate import (
    HANDWRITTEN_POOL,
    HandwrittenEvalError,
    evaluate_handwritten,
    handwritten_candidates,
    load_handwritten_eval,
    model_document_text,
)
from mangadistill.sample_data.catalog import catalog_records
from mangadistill.sample_data.queries import build_reranker_splits

CATALOG = catalog_records()
BY_SKU = {record["sku"]: record for record in CATALOG}
READ = partial(catalog_document, description=False)
TITLE_OF_TEXT = {READ(record): record["title"] for record in CATALOG}
HANDWRITTEN = load_handwritten_eval()
GRADES = {(query.query, judgment.title): judgment.grade for query in HANDWRITTEN.queries
          for judgment in query.judgments}


def _jitter(*parts: str) -> float:
    return zlib.crc32("\x1f".join(parts).encode()) / 2**32


def query_blind(queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """A student that learned which catalog records score high, whatever the query: score = f(candidate)."""
    return np.asarray([_jitter(text) for text in texts])


def constant(queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    return np.full(len(queries), 0.5)


def oracle(queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """Reads the query perfectly: the judged grade, ties broken by a tiny (query, candidate) hash."""
    return np.asarray([GRADES.get((q, TITLE_OF_TEXT[t]), 0) + 0.01 * _jitter(q, t) for q, t in zip(queries, texts,
                                                                                                  strict=True)])


def word_overlap(queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """Reads the query crudely: share of the query's words found in the candidate text."""
    return np.asarray([len(set(tokenize(q)) & set(tokenize(t))) / (1 + len(set(tokenize(q))))
                       for q, t in zip(queries, texts, strict=True)])


def handwritten_gates():
    return [gate for gate in load_gates(packaged_gates_path("reranker")) if gate.metric.startswith("handwritten_")]


def run(student, teacher=oracle, int8=None) -> dict[str, float]:
    metrics, _ = evaluate_handwritten(HANDWRITTEN, CATALOG, READ,
                                      {"teacher": teacher, "student": student, "student_int8": int8 or student})
    return metrics


def failed(metrics: dict[str, float]) -> set[str]:
    return {result.metric for result in evaluate_gates(handwritten_gates(), metrics).failed}


# --- gates on the hand-written set ----------------------------------------------------------------------------


def test_a_query_blind_student_fails_the_blind_checks_and_the_bm25_gate():
    metrics = run(query_blind)
    assert metrics["handwritten_student_query_interaction_share"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["handwritten_student_top1_repeat_share"] > 0.2
    assert metrics["handwritten_student_ndcg_at_10"] < metrics["handwritten_bm25_ndcg_at_10"]
    assert failed(metrics) >= {"handwritten_student_query_interaction_share", "handwritten_student_top1_repeat_share",
                               "handwritten_student_vs_bm25", "handwritten_ndcg_retained"}


def test_a_student_that_scores_everything_alike_keeps_bm25_order_and_still_fails_as_blind():
    metrics = run(constant)
    # equal scores keep the candidates' BM25 order: exactly BM25's NDCG, so the BM25 gate alone would pass it
    assert metrics["handwritten_student_vs_bm25"] == 0.0
    assert metrics["handwritten_student_query_interaction_share"] == 0.0
    assert "handwritten_student_query_interaction_share" in failed(metrics)
    assert "handwritten_student_vs_bm25" not in failed(metrics)


def test_a_student_that_reads_the_query_passes_every_hand_written_gate():
    metrics = run(oracle)
    assert failed(metrics) == set()
    assert metrics["handwritten_student_ndcg_at_10"] == pytest.approx(1.0)
    assert metrics["handwritten_student_query_interaction_share"] > 0.9
    assert metrics["handwritten_ndcg_retained"] == 1.0 and metrics["handwritten_int8_drop"] == 0.0


def test_a_crude_query_reader_clears_the_blind_checks():
    metrics = run(word_overlap)
    assert metrics["handwritten_student_query_interaction_share"] > 0.9
    assert metrics["handwritten_student_top1_repeat_share"] <= 0.2
    assert {"handwritten_student_query_interaction_share", "handwritten_student_top1_repeat_share"}.isdisjoint(
        failed(metrics))


def test_an_int8_student_that_loses_more_than_a_point_fails_and_the_derived_metrics_follow_their_formulas():
    metrics = run(oracle, teacher=word_overlap, int8=word_overlap)
    ndcg = {name: metrics[f"handwritten_{name}_ndcg_at_10"] for name in ("bm25", "teacher", "student", "student_int8")}
    assert metrics["handwritten_ndcg_retained"] == pytest.approx(ndcg["student"] / ndcg["teacher"])
    assert metrics["handwritten_student_vs_bm25"] == pytest.approx(ndcg["student"] - ndcg["bm25"])
    assert metrics["handwritten_teacher_vs_bm25"] == pytest.approx(ndcg["teacher"] - ndcg["bm25"])
    assert metrics["handwritten_int8_drop"] == pytest.approx(ndcg["student"] - ndcg["student_int8"])
    assert metrics["handwritten_int8_drop"] > 0.01
    assert "handwritten_int8_drop" in failed(metrics)


@pytest.mark.parametrize("value", [None, float("nan")])
def test_a_missing_or_nan_hand_written_metric_fails_its_gate(value):
    metrics = run(oracle)
    if value is None:
        del metrics["handwritten_student_query_interaction_share"]
    else:
        metrics["handwritten_student_query_interaction_share"] = value
    results = {result.metric: result for result in evaluate_gates(handwritten_gates(), metrics).results}
    assert not results["handwritten_student_query_interaction_share"].passed


def test_the_top1_threshold_leaves_room_for_every_query_to_get_one_of_its_best_titles():
    # from the judgments only: how many queries a single title is a top-graded answer for
    best = Counter()
    for query in HANDWRITTEN.queries:
        top = max(judgment.grade for judgment in query.judgments)
        best.update(judgment.title for judgment in query.judgments if judgment.grade == top)
    structural = max(best.values()) / len(HANDWRITTEN.queries)
    threshold = {gate.metric: gate.threshold for gate in handwritten_gates()}["handwritten_student_top1_repeat_share"]
    assert structural <= threshold / 4


def test_metrics_per_kind_cover_every_kind_and_average_back_to_the_whole_set():
    metrics = run(word_overlap)
    kinds = Counter(query.kind for query in HANDWRITTEN.queries)
    assert {kind: metrics[f"handwritten_kind_{kind}_queries"] for kind in kinds} == kinds
    for name in ("bm25", "teacher", "student"):
        weighted = sum(n * metrics[f"handwritten_kind_{kind}_{name}_ndcg_at_10"] for kind, n in kinds.items())
        # every packaged query has a title graded >= 2, so no query is left out of a mean
        assert weighted / sum(kinds.values()) == pytest.approx(metrics[f"handwritten_{name}_ndcg_at_10"])


# --- pools and the text the models read ------------------------------------------------------------------------


def test_pools_are_bm25_top_50_then_the_judged_titles_bm25_missed_in_bm25_order():
    index = CatalogIndex.from_records(CATALOG)
    queries = [query for query in HANDWRITTEN.queries if query.query in ("boxing manga", "pirates",
                                                                         "a chef competing in cooking battles")]
    rows = handwritten_candidates(queries, index, BY_SKU, READ)
    added = 0
    for query in queries:
        pool = [row for row in rows if row["query_id"] == query.query_id]
        top = index.search(query.query, HANDWRITTEN_POOL)
        assert [row["sku"] for row in pool[:HANDWRITTEN_POOL]] == [sku for sku, _ in top]
        assert [row["retrieval_rank"] for row in pool[:HANDWRITTEN_POOL]] == list(range(1, HANDWRITTEN_POOL + 1))
        grades = {judgment.sku: judgment.grade for judgment in query.judgments}
        missed = pool[HANDWRITTEN_POOL:]
        assert {row["sku"] for row in missed} == set(grades) - {sku for sku, _ in top}
        assert all(row["retrieval_rank"] is None for row in missed)
        scores = [row["bm25_score"] for row in pool]
        assert scores == sorted(scores, reverse=True)
        assert all(row["relevance"] == grades.get(row["sku"], 0) for row in pool)
        assert all(row["candidate_text"] == READ(BY_SKU[row["sku"]]) for row in pool)
        added += len(missed)
    assert added > 0  # these queries' best titles are not all in BM25's top 50


def _eval_table() -> pa.Table:
    return build_reranker_splits(seed=4, n_train=1, n_production=1, n_eval=3, k=6)["eval_candidates"]


def _with_texts(table: pa.Table, texts: list[str]) -> pa.Table:
    return table.set_column(table.schema.get_field_index("candidate_text"), "candidate_text", pa.array(texts))


def test_the_hand_written_candidates_are_read_like_the_generated_ones_with_or_without_description():
    table = _eval_table()
    build, description = model_document_text(table, BY_SKU, "eval.parquet")
    record = BY_SKU[table["sku"][0].as_py()]
    assert build(record) == table["candidate_text"][0].as_py()
    assert description is (build(record) == catalog_document(record))
    flipped = _with_texts(table, [catalog_document(BY_SKU[sku], description=not description)
                                  for sku in table["sku"].to_pylist()])
    build, other = model_document_text(flipped, BY_SKU, "eval.parquet")
    assert other is (not description) and build(record) == flipped["candidate_text"][0].as_py()


def test_candidate_texts_from_no_single_builder_or_another_catalog_are_refused():
    table = _eval_table()
    texts = table["candidate_text"].to_pylist()
    texts[2] = texts[2] + " Extra words."
    with pytest.raises(DataContractError, match=r"eval.parquet, column 'candidate_text', row 2: .*catalog_document"):
        model_document_text(_with_texts(table, texts), BY_SKU, "eval.parquet")
    without = {sku: record for sku, record in BY_SKU.items() if sku != table["sku"][1].as_py()}
    with pytest.raises(DataContractError, match=r"column 'sku', row 1: .* is not in the catalog"):
        model_document_text(table, without, "eval.parquet")


# --- the loader ---------------------------------------------------------------------------------------------------


def test_the_packaged_set_loads_with_its_line_numbers_and_every_kind():
    assert len(HANDWRITTEN.queries) == 95 and HANDWRITTEN.source.endswith("reranker_eval_handwritten.jsonl")
    assert HANDWRITTEN.queries[0].query == "pirates" and HANDWRITTEN.queries[4].line == 5
    assert len({query.kind for query in HANDWRITTEN.queries}) == 9


GOOD = {"query_id": "u-1", "query": "pirates", "kind": "single_word",
        "judgments": [{"sku": "MA-00001", "title": "One Piece", "grade": 3}]}


def _write(tmp_path, lines: list[object]) -> str:
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


@pytest.mark.parametrize(("line", "expected"), [
    ("{not json", r"line 2: not valid JSON"),
    ('["a list"]', r"line 2: expected a JSON object"),
    ({**GOOD, "query_id": "u-2", "kind": None}, r"line 2, field 'kind': must be a non-empty string, got None"),
    ({k: v for k, v in GOOD.items() if k != "query"} | {"query_id": "u-2"}, r"line 2, field 'query': missing"),
    ({**GOOD, "query_id": "u-2", "query": "  "}, r"line 2, field 'query': must be a non-empty string"),
    ({**GOOD, "query_id": "u-2", "judgments": []}, r"line 2, field 'judgments': must be a non-empty list"),
    ({**GOOD, "query_id": "u-2", "judgments": [{"sku": "MA-00001", "title": "One Piece", "grade": 4}]},
     r"line 2, field 'judgments\[0\].grade': must be an integer in \[0, 1, 2, 3\], got 4"),
    ({**GOOD, "query_id": "u-2", "judgments": [{"sku": "MA-00001", "title": "One Piece", "grade": "3"}]},
     r"field 'judgments\[0\].grade': must be an integer"),
    ({**GOOD, "query_id": "u-2", "judgments": [{"sku": "MA-00001", "title": "One Piece", "grade": True}]},
     r"field 'judgments\[0\].grade': must be an integer"),
    ({**GOOD, "query_id": "u-2", "judgments": [{"sku": "MA-00001", "grade": 3}]},
     r"field 'judgments\[0\].title': missing"),
    ({**GOOD, "query_id": "u-2", "judgments": [*GOOD["judgments"], {"sku": "MA-00001", "title": "One Piece",
                                                                     "grade": 1}]},
     r"field 'judgments\[1\].sku': 'MA-00001' is already judged in judgments\[0\]"),
    (GOOD, r"line 2, field 'query_id': 'u-1' is already used on line 1"),
])
def test_a_users_file_with_a_bad_line_is_refused_naming_file_line_and_field(tmp_path, line, expected):
    uri = _write(tmp_path, [GOOD, line])
    with pytest.raises(HandwrittenEvalError, match=expected) as error:
        load_handwritten_eval(uri)
    assert str(error.value).startswith(uri)


def test_a_users_file_loads_skipping_blank_lines_and_an_empty_one_is_refused(tmp_path):
    loaded = load_handwritten_eval(_write(tmp_path, ["", GOOD, "   ", {**GOOD, "query_id": "u-2"}]))
    assert [(query.query_id, query.line) for query in loaded.queries] == [("u-1", 2), ("u-2", 4)]
    with pytest.raises(HandwrittenEvalError, match="no queries"):
        load_handwritten_eval(_write(tmp_path, ["", " "]))


@pytest.mark.parametrize(("judgment", "expected"), [
    ({"sku": "MA-99999", "title": "One Piece", "grade": 3}, r"line 2, field 'judgments\[0\].sku': 'MA-99999' is not"),
    ({"sku": "MA-00001", "title": "Naruto", "grade": 3},
     r"line 2, field 'judgments\[0\].title': 'Naruto', but the catalog's title for MA-00001 is 'One Piece'"),
])
def test_judgments_must_name_catalog_records_by_their_catalog_title(tmp_path, judgment, expected):
    uri = _write(tmp_path, [GOOD, {**GOOD, "query_id": "u-2", "judgments": [judgment]}])
    with pytest.raises(HandwrittenEvalError, match=expected):
        evaluate_handwritten(load_handwritten_eval(uri), CATALOG, READ,
                             {"teacher": oracle, "student": oracle, "student_int8": oracle})
