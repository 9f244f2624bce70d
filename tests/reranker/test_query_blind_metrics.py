"""The query-blind checks: top-1 repeat share and the query interaction share of a score matrix."""

from __future__ import annotations

import numpy as np
import pytest

from mangadistill.reranker.metrics import query_interaction_share, top1_per_query, top1_repeat

RNG = np.random.default_rng(0)
QUERIES, CANDIDATES = 40, 20


def test_scores_of_the_candidate_alone_have_no_interaction_even_with_a_per_query_offset():
    item = RNG.normal(size=CANDIDATES)
    offset = RNG.normal(size=(QUERIES, 1)) * 5
    assert query_interaction_share(np.tile(item, (QUERIES, 1))) == pytest.approx(0.0, abs=1e-12)
    # an offset per query changes no ranking: still blind
    assert query_interaction_share(item[None, :] + offset) == pytest.approx(0.0, abs=1e-12)


def test_scores_of_the_pair_alone_are_almost_all_interaction():
    pair = RNG.normal(size=(QUERIES, CANDIDATES))
    assert query_interaction_share(pair) == pytest.approx(1 - 1 / QUERIES, abs=0.03)


def test_the_share_is_the_part_of_within_query_variance_the_candidate_does_not_explain():
    item = np.linspace(-1, 1, CANDIDATES)
    pair = RNG.normal(size=(QUERIES, CANDIDATES))
    pair -= pair.mean(axis=0) + pair.mean(axis=1, keepdims=True) - pair.mean()  # pure interaction
    pair *= np.sqrt(np.mean(item**2) / np.mean(pair**2))  # same variance as the item effect
    assert query_interaction_share(item[None, :] + pair) == pytest.approx(0.5, abs=1e-9)
    shares = [query_interaction_share(item[None, :] + w * pair) for w in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert shares == sorted(shares) and shares[0] < 1e-12 and shares[-1] > 0.9


def test_constant_scores_rank_nothing_and_count_as_blind_and_degenerate_shapes_are_undefined():
    assert query_interaction_share(np.full((QUERIES, CANDIDATES), 0.3)) == 0.0
    assert np.isnan(query_interaction_share(np.ones((1, CANDIDATES))))
    assert np.isnan(query_interaction_share(np.ones((QUERIES, 1))))
    with_nan = RNG.normal(size=(QUERIES, CANDIDATES))
    with_nan[3, 4] = np.nan
    assert np.isnan(query_interaction_share(with_nan))
    with pytest.raises(ValueError, match="matrix"):
        query_interaction_share(np.ones(5))


def test_top1_per_query_ranks_each_query_by_score_and_keeps_the_given_order_on_ties():
    top = top1_per_query(["q1", "q1", "q2", "q2", "q1"], ["a", "b", "c", "d", "e"], [0.1, 0.9, 0.5, 0.5, 0.9])
    assert top == {"q1": "b", "q2": "c"}
    with pytest.raises(ValueError, match="3 query ids"):
        top1_per_query(["q1", "q1", "q2"], ["a", "b"], [1, 2, 3])


def test_top1_repeat_is_the_largest_share_of_queries_with_the_same_top_item():
    assert top1_repeat(["a", "b", "a", "c", "a"]) == (0.6, "a")
    assert top1_repeat(["a", "b", "c", "d"]) == (0.25, "a")
    share, item = top1_repeat([])
    assert np.isnan(share) and item is None
