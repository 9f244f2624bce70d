"""Reranker contracts: shopping queries, the candidates to rerank with graded judgments, teacher scores."""

from __future__ import annotations

import math

import pyarrow as pa

from mangadistill.core.contracts import (
    ValidatedTable,
    nonempty_text,
    optional_field,
    quarantine_table,
    register_row_checks,
)

RELEVANCE_GRADES = (0, 1, 2, 3)
_RERANK_KEY = {b"key": b"query_id,sku"}

UNSPECIFIED_KIND = "unspecified"
"""The query kind of a user's query file without a `kind` column."""

RERANK_QUERIES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        optional_field("split", pa.string()),
        optional_field("kind", pa.string(), default=UNSPECIFIED_KIND),
        optional_field("constraints", pa.list_(pa.string()), default=[]),
    ],
    metadata={b"contract": b"rerank_queries", b"key": b"query_id"},
)
"""Shopping queries; `constraints` describes, in words, the catalog facts the relevance grades come from.
Only query_id and query are required: the sample generator's `split` (default null), `kind` (default
"unspecified") and `constraints` (default []) are for reading the sample data, and no stage needs them."""

RERANK_CANDIDATES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("sku", pa.string(), nullable=False),
        pa.field("candidate", pa.string(), nullable=False),
        optional_field("candidate_text", pa.string(), copy_of="candidate"),
        optional_field("retrieval_rank", pa.int32()),
        optional_field("bm25_score", pa.float32()),
        optional_field("relevance", pa.int8()),
    ],
    metadata={b"contract": b"rerank_candidates", **_RERANK_KEY},
)
"""One row per (query, catalog item) to rerank: `candidate` is the title, `candidate_text` the text a model
reads (`retrieval.catalog_document`), `retrieval_rank` the 1-based BM25 rank (null for a judged item added
because BM25 missed it), `relevance` the graded judgment 0-3 where known (null on unlabelled queries).

A user's own table needs query_id, query, sku (any document id) and candidate (the document's text); absent
columns default to: candidate_text = candidate; retrieval_rank null (so `top_k` keeps every candidate of a
query); bm25_score null (the gate scores BM25 over each such query's own candidate texts); relevance null
(unjudged: the eval and judged-train files need it on every row)."""

RERANK_TEACHER_SCORES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("sku", pa.string(), nullable=False),
        pa.field("candidate", pa.string(), nullable=False),
        pa.field("candidate_text", pa.string(), nullable=False),
        pa.field("teacher_score", pa.float32(), nullable=False),
        pa.field("relevance", pa.int8()),
    ],
    metadata={b"contract": b"rerank_teacher_scores", **_RERANK_KEY},
)
"""The teacher's score per pair ({"query", "candidate", "teacher_score"}) plus ids, the text the teacher read and
the supervised label where known; teacher_score is a probability in [0, 1] (sigmoid of the logit)."""


def _teacher_score_check(value: object) -> str | None:
    score = float(value)  # type: ignore[arg-type]
    if math.isnan(score):
        return "NaN teacher score"
    return None if 0.0 <= score <= 1.0 else "teacher score outside [0, 1]"


def _relevance_check(value: object) -> str | None:
    return None if value in RELEVANCE_GRADES else f"relevance not one of {RELEVANCE_GRADES}"


register_row_checks(RERANK_QUERIES, {"query": nonempty_text})
register_row_checks(RERANK_CANDIDATES, {
    "query": nonempty_text, "candidate_text": nonempty_text, "relevance": _relevance_check,
})
register_row_checks(RERANK_TEACHER_SCORES, {
    "query": nonempty_text, "candidate_text": nonempty_text, "teacher_score": _teacher_score_check,
    "relevance": _relevance_check,
})


def check_query_coverage(queries: pa.Table, candidates: pa.Table, source: str) -> ValidatedTable:
    """Split `queries` (RERANK_QUERIES rows) into those with at least one row in `candidates` (any table with
    query_id) and a quarantine of those without, reason "query has no candidates"."""
    covered = set(candidates.column("query_id").to_pylist())
    query_ids = queries.column("query_id").to_pylist()
    bad = [
        {"source": source, "row": row, "message_id": query_id, "column": "query_id",
         "reason": "query has no candidates", "value": query_id}
        for row, query_id in enumerate(query_ids) if query_id not in covered
    ]
    keep = pa.array([query_id in covered for query_id in query_ids], type=pa.bool_())
    return ValidatedTable(queries.filter(keep), quarantine_table(bad))


