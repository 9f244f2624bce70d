"""Ranking quality for graded relevance (0-3): NDCG@k and MRR, per query and averaged over queries.

NDCG@k, exponential gain and log2 discount::

    DCG@k  = sum_{i=1..min(k, n)} (2^rel_i - 1) / log2(i + 1)      (rel_i: relevance of the item ranked i)
    NDCG@k = DCG@k / IDCG@k,   IDCG@k = DCG@k of the same items sorted by relevance, best first

The ideal ranking is taken over the judged candidate set of the query (every candidate carries a judgment),
so NDCG measures how well a model orders the candidates it was given, not retrieval recall.

MRR: reciprocal rank of the first item with relevance >= `threshold` (default 2, "meets most of the query"),
averaged over queries.

Queries with no relevant item: NDCG is 0/0 and MRR has no first relevant item, so both are undefined for such
a query. Per-query functions return NaN for them, and `mean_ranking_metrics` leaves them out of the means and
reports how many it left out (`queries_without_relevant`), so an evaluation set of such queries shows up
instead of counting as 0 or 1. Ranking by scores sorts descending; ties keep the candidates' given order.

Query-blind checks (a reranker that scores a candidate the same whatever the query): `top1_repeat` (the largest
share of queries with the same top-1 item) and `query_interaction_share` (the share of within-query score
variance that the candidate alone does not explain); formulas in their docstrings.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_MRR_THRESHOLD = 2


def _relevances(values: ArrayLike) -> np.ndarray:
    rel = np.asarray(values, dtype=np.float64)
    if rel.ndim != 1:
        raise ValueError(f"relevances must be one-dimensional, got shape {rel.shape}")
    if not np.all(np.isfinite(rel)) or np.any(rel < 0):
        raise ValueError("relevances must be finite and >= 0")
    return rel


def dcg_at_k(ranked_relevances: ArrayLike, k: int) -> float:
    """sum over the first k ranks i (1-based) of (2^rel_i - 1) / log2(i + 1)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rel = _relevances(ranked_relevances)[:k]
    discounts = np.log2(np.arange(2, rel.size + 2))
    return float(np.sum((np.power(2.0, rel) - 1.0) / discounts))


def ndcg_at_k(ranked_relevances: ArrayLike, k: int) -> float:
    """DCG@k of the given order / DCG@k of the ideal order of the same items; NaN when no item is relevant."""
    rel = _relevances(ranked_relevances)
    ideal = dcg_at_k(np.sort(rel)[::-1], k)
    return float("nan") if ideal == 0 else dcg_at_k(rel, k) / ideal


def reciprocal_rank(ranked_relevances: ArrayLike, threshold: float = DEFAULT_MRR_THRESHOLD) -> float:
    """1 / rank of the first item with relevance >= threshold; NaN when no item reaches it."""
    hits = np.flatnonzero(_relevances(ranked_relevances) >= threshold)
    return float("nan") if hits.size == 0 else 1.0 / float(hits[0] + 1)


def rank_by_scores(scores: ArrayLike) -> np.ndarray:
    """Indices that sort `scores` descending; equal scores keep their given order."""
    values = np.asarray(scores, dtype=np.float64)
    if np.any(np.isnan(values)):
        raise ValueError("scores contain NaN: cannot rank")
    return np.argsort(-values, kind="stable")


@dataclass(frozen=True)
class QueryRanking:
    """One query's metrics (NaN when it has no relevant item, see the module docstring)."""

    query_id: str
    ndcg: float
    reciprocal_rank: float
    candidates: int


def per_query_metrics(
    query_ids: Sequence[str],
    relevances: ArrayLike,
    scores: ArrayLike,
    k: int = 10,
    threshold: float = DEFAULT_MRR_THRESHOLD,
) -> list[QueryRanking]:
    """Group rows (one per query-candidate pair) by query id, rank each query's candidates by score, and
    compute NDCG@k and the reciprocal rank; queries come back in order of first appearance."""
    rel, score = _relevances(relevances), np.asarray(scores, dtype=np.float64)
    if not (len(query_ids) == rel.size == score.size):
        raise ValueError(f"{len(query_ids)} query ids, {rel.size} relevances and {score.size} scores")
    rows: dict[str, list[int]] = {}
    for row, query_id in enumerate(query_ids):
        rows.setdefault(query_id, []).append(row)
    out = []
    for query_id, idx in rows.items():
        ranked = rel[idx][rank_by_scores(score[idx])]
        out.append(QueryRanking(query_id, ndcg_at_k(ranked, k), reciprocal_rank(ranked, threshold), len(idx)))
    return out


def mean_ranking_metrics(rankings: Sequence[QueryRanking]) -> dict[str, float]:
    """{"ndcg", "mrr", "queries", "queries_without_relevant", "queries_without_mrr_hit"}: means over the queries
    where each value is defined (NaN when none is); the two counts say how many queries each mean left out."""
    ndcg = [r.ndcg for r in rankings if not math.isnan(r.ndcg)]
    rr = [r.reciprocal_rank for r in rankings if not math.isnan(r.reciprocal_rank)]
    return {
        "ndcg": float(np.mean(ndcg)) if ndcg else float("nan"),
        "mrr": float(np.mean(rr)) if rr else float("nan"),
        "queries": float(len(rankings)),
        "queries_without_relevant": float(len(rankings) - len(ndcg)),
        "queries_without_mrr_hit": float(len(rankings) - len(rr)),
    }


def top1_per_query(query_ids: Sequence[str], items: Sequence[str], scores: ArrayLike) -> dict[str, str]:
    """{query id: its top-ranked item} (`rank_by_scores`, ties keep the given order), queries in order of first
    appearance; rows are (query, item) pairs as in `per_query_metrics`."""
    score = np.asarray(scores, dtype=np.float64)
    if not (len(query_ids) == len(items) == score.size):
        raise ValueError(f"{len(query_ids)} query ids, {len(items)} items and {score.size} scores")
    rows: dict[str, list[int]] = {}
    for row, query_id in enumerate(query_ids):
        rows.setdefault(query_id, []).append(row)
    return {query_id: items[idx[int(rank_by_scores(score[idx])[0])]] for query_id, idx in rows.items()}


def top1_repeat(top1: Sequence[str]) -> tuple[float, str | None]:
    """(share, item): the largest share of queries that have the same top-1 item, max_i |{q: top1(q) = i}| / |Q|,
    and that item (the first to reach the count); (NaN, None) for no query. A reranker that reads the query spreads
    its top 1 over as many items as the queries ask for; one that ranks by the item alone repeats the same few."""
    if not top1:
        return float("nan"), None
    item, count = Counter(top1).most_common(1)[0]
    return count / len(top1), item


def query_interaction_share(scores: ArrayLike) -> float:
    """Share of the within-query score variance that depends on the (query, candidate) pair rather than on the
    candidate alone, for a |Q| x |D| matrix S of every query scored against one common candidate set D::

        W[q, d] = S[q, d] − mean_d' S[q, d']          (within query: a per-query offset never changes a ranking)
        c[d]    = mean_q W[q, d]                      (the candidate's own effect, the same whatever the query)
        share   = Σ_{q,d} (W[q, d] − c[d])² / Σ_{q,d} W[q, d]²  =  1 − |Q|·Σ_d c[d]² / Σ_{q,d} W[q, d]²

    0 for a query-blind scorer (S = f(d), or f(d) + g(q): every query ranks D the same), near 1 − 1/|Q| for
    scores driven only by the pair; 0 too when no query's scores vary (nothing is ranked). NaN with fewer than
    two queries or two candidates, or a non-finite score.
    """
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"scores must be a |queries| x |candidates| matrix, got shape {matrix.shape}")
    if min(matrix.shape) < 2 or not np.all(np.isfinite(matrix)):
        return float("nan")
    within = matrix - matrix.mean(axis=1, keepdims=True)
    total = float(np.sum(within**2))
    if total <= 1e-12 * matrix.size * max(1.0, float(np.max(np.abs(matrix))) ** 2):
        return 0.0
    candidate_effect = within.mean(axis=0)
    return float(max(0.0, 1.0 - matrix.shape[0] * float(np.sum(candidate_effect**2)) / total))
