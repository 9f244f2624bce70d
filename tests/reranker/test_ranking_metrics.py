"""NDCG@k (gain 2^rel - 1, log2 discount), MRR, and how queries without a relevant item are handled."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mangadistill.reranker.metrics import (
    dcg_at_k,
    mean_ranking_metrics,
    ndcg_at_k,
    per_query_metrics,
    rank_by_scores,
    reciprocal_rank,
)


def test_dcg_uses_exponential_gain_and_log2_discount():
    expected = (2**3 - 1) / math.log2(2) + (2**0 - 1) / math.log2(3) + (2**2 - 1) / math.log2(4)
    assert dcg_at_k([3, 0, 2], 10) == pytest.approx(expected)
    assert dcg_at_k([3, 0, 2], 1) == pytest.approx(7.0)


def test_ndcg_is_one_for_the_ideal_order_and_lower_otherwise():
    assert ndcg_at_k([3, 2, 1, 0], 10) == pytest.approx(1.0)
    worst = ndcg_at_k([0, 1, 2, 3], 10)
    assert 0 < worst < 1
    ideal = 7 + 3 / math.log2(3) + 1 / math.log2(4)
    assert worst == pytest.approx((1 / math.log2(3) + 3 / math.log2(4) + 7 / math.log2(5)) / ideal)


def test_ndcg_at_k_ideal_comes_from_all_items_not_the_first_k():
    # the relevant item sits below the cut: DCG@1 = 0 while the ideal DCG@1 is 7
    assert ndcg_at_k([0, 3], 1) == 0.0


def test_queries_without_relevant_item_are_nan_and_left_out_of_means_with_a_count():
    assert math.isnan(ndcg_at_k([0, 0, 0], 10))
    assert math.isnan(reciprocal_rank([0, 1, 1], threshold=2))
    rankings = per_query_metrics(["a", "a", "b", "b", "c"], [3, 0, 0, 0, 1], [0.1, 0.9, 0.5, 0.4, 0.3])
    means = mean_ranking_metrics(rankings)
    assert [r.query_id for r in rankings] == ["a", "b", "c"]
    assert means["queries"] == 3 and means["queries_without_relevant"] == 1
    assert means["queries_without_mrr_hit"] == 2  # b has nothing, c only relevance 1 < 2
    assert means["ndcg"] == pytest.approx((1 / math.log2(3) + 1.0) / 2)
    assert means["mrr"] == pytest.approx(0.5)


def test_mean_of_only_undefined_queries_is_nan():
    means = mean_ranking_metrics(per_query_metrics(["a", "a"], [0, 0], [1.0, 2.0]))
    assert math.isnan(means["ndcg"]) and math.isnan(means["mrr"])


def test_reciprocal_rank_finds_first_item_at_threshold():
    assert reciprocal_rank([1, 0, 2, 3]) == pytest.approx(1 / 3)
    assert reciprocal_rank([1, 0, 2, 3], threshold=1) == 1.0


def test_ranking_is_descending_and_ties_keep_given_order():
    assert rank_by_scores([0.2, 0.9, 0.2, 0.5]).tolist() == [1, 3, 0, 2]
    with pytest.raises(ValueError, match="NaN"):
        rank_by_scores([0.1, np.nan])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="k must be >= 1"):
        dcg_at_k([1], 0)
    with pytest.raises(ValueError, match=">= 0"):
        ndcg_at_k([1, -1], 5)
    with pytest.raises(ValueError, match="2 query ids, 3 relevances"):
        per_query_metrics(["a", "b"], [1, 0, 2], [0.1, 0.2, 0.3])
