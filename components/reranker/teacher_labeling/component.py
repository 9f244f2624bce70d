"""KFP component: the cross-encoder teacher scores every (query, candidate) pair of the reranker's candidates."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("teacher-labeling"), install_kfp_package=False)
def reranker_teacher_labeling(
    candidates: Input[Dataset],
    teacher_model: str,
    teacher_scores: Output[Dataset],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
    queries: Input[Dataset] = None,
    top_k: int = 0,
    batch_size: int = 32,
    max_length: int = 128,
    on_bad_rows: str = "quarantine",
):
    """Scores every (query, candidate) pair with the cross-encoder teacher: teacher_score = sigmoid(logit).

    Args:
        candidates: The `rerank_candidates` contract, one row per (query, sku), e.g. each production query's
            BM25 candidates.
        teacher_model: The teacher cross-encoder (one logit): a local folder, a gs:// prefix or a builtin name.
        queries: Optional: the `rerank_queries` contract; queries with no candidate row are quarantined
            ("query has no candidates").
        top_k: Score each query's first top_k candidates in retrieval order; 0 scores all.
        batch_size: Pairs per forward pass (pairs are sorted by length to cut padding).
        max_length: Token limit of query + candidate text.
        on_bad_rows: `quarantine` (default) or `fail`.

    Returns:
        teacher_scores: The `rerank_teacher_scores` contract: query, candidate and teacher_score in [0, 1] per
            pair, with ids, the text scored and the relevance where known.
        quarantine: Rows refused, with reasons (malformed or duplicate pairs, NaN or out-of-range teacher
            scores, queries without candidates).
        metrics: Pairs and queries scored, pairs beyond top_k, mean teacher score, pairs per second,
            quarantine counts.
    """
    from mangadistill.reranker.stages import run_reranker_teacher_labeling

    summary = run_reranker_teacher_labeling(
        candidates.path, teacher_scores.path, quarantine.path, teacher_model,
        queries_uri=queries.path if queries else "", top_k=top_k, batch_size=batch_size, max_length=max_length,
        on_bad_rows=on_bad_rows,
    )
    for name, value in summary.items():
        metrics.log_metric(name, value)
