"""Reranker stage functions: bad input is quarantined with reasons or raises naming file, column and row."""

import shutil

import pyarrow as pa
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import build_tiny_bert
from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError
from mangadistill.reranker.contracts import RERANK_QUERIES
from mangadistill.reranker.cross_encoder import RerankerTrainConfig
from mangadistill.reranker.stages import run_reranker_teacher_labeling, run_reranker_training
from mangadistill.sample_data.queries import build_reranker_splits


@pytest.fixture(scope="module")
def rerank_splits() -> dict[str, pa.Table]:
    return build_reranker_splits(seed=5, n_train=4, n_production=4, n_eval=2, k=5)


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-cross-encoder"), labels=("relevance",))


def test_reranker_labeling_quarantines_duplicate_pairs_and_queries_without_candidates(
        tmp_path, rerank_splits, tiny_cross_encoder):
    candidates = rerank_splits["production_candidates"]
    duplicated = pa.concat_tables([candidates, candidates.slice(3, 1)])
    queries = pa.concat_tables([rerank_splits["production_queries"], pa.Table.from_pylist(
        [{"query_id": "q-orphan", "query": "manga about pirates", "split": "production", "kind": "facets",
          "constraints": ["theme pirates"]}], schema=RERANK_QUERIES)])
    for name, table in (("candidates", duplicated), ("queries", queries)):
        storage.write_table(table, str(tmp_path / f"{name}.parquet"))
    out = {name: str(tmp_path / name) for name in ("scores", "quarantine")}
    metrics = run_reranker_teacher_labeling(
        str(tmp_path / "candidates.parquet"), out["scores"], out["quarantine"], str(tiny_cross_encoder),
        queries_uri=str(tmp_path / "queries.parquet"), top_k=3)
    quarantine = storage.read_table(out["quarantine"]).to_pylist()
    assert sorted((row["reason"], row["row"]) for row in quarantine) == [
        ("duplicate (query_id, sku) pair", candidates.num_rows), ("query has no candidates", 4)]
    assert metrics["quarantined_query_has_no_candidates"] == 1 and metrics["quarantined_rows"] == 2
    scores = storage.read_table(out["scores"])
    assert scores.num_rows == metrics["pairs_scored"] == 4 * 3  # top_k=3 of 5 BM25 candidates per query
    assert metrics["pairs_beyond_top_k"] == 4 * 2
    assert all(0.0 <= s <= 1.0 for s in scores.column("teacher_score").to_pylist())


def test_reranker_labeling_with_a_nan_teacher_is_a_clear_error(tmp_path, rerank_splits, tiny_cross_encoder):
    broken = tmp_path / "nan-teacher"
    shutil.copytree(tiny_cross_encoder, broken)
    model = AutoModelForSequenceClassification.from_pretrained(broken)
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    model.save_pretrained(broken)
    storage.write_table(rerank_splits["production_candidates"], str(tmp_path / "candidates.parquet"))
    with pytest.raises(DataContractError) as err:
        run_reranker_teacher_labeling(str(tmp_path / "candidates.parquet"), str(tmp_path / "scores"),
                                      str(tmp_path / "q"), str(broken))
    assert (err.value.column, err.value.row) == ("teacher_score", 0)
    assert "NaN teacher score" in str(err.value) and str(broken) in str(err.value)


def test_reranker_training_quarantines_nan_and_out_of_range_teacher_scores(tmp_path, rerank_splits, tiny_encoder):
    rows = [{**row, "teacher_score": 0.5} for row in rerank_splits["production_candidates"].to_pylist()]
    rows[2]["teacher_score"], rows[7]["teacher_score"] = float("nan"), 1.5
    storage.write_table(pa.Table.from_pylist(rows), str(tmp_path / "scores.parquet"))
    storage.write_table(rerank_splits["train_candidates"], str(tmp_path / "judged.parquet"))
    config = RerankerTrainConfig(epochs=1, batch_size=8, max_length=48, alpha=0.5)
    metrics = run_reranker_training(
        str(tmp_path / "scores.parquet"), str(tiny_encoder), str(tmp_path / "student"), config,
        labelled_uri=str(tmp_path / "judged.parquet"), labelled_per_query=3, quarantine_uri=str(tmp_path / "q"))
    quarantine = storage.read_table(str(tmp_path / "q")).to_pylist()
    assert [(row["row"], row["column"], row["reason"]) for row in quarantine] == [
        (2, "teacher_score", "NaN teacher score"), (7, "teacher_score", "teacher score outside [0, 1]")]
    assert metrics["teacher_scored_pairs"] == len(rows) - 2 and metrics["labelled_pairs"] == 4 * 3
    assert (tmp_path / "student" / "config.json").exists()

    with pytest.raises(ValueError, match=r"alpha=1\.0"):  # nothing judged, and alpha 1 ignores teacher scores
        run_reranker_training(str(tmp_path / "scores.parquet"), str(tiny_encoder), str(tmp_path / "s2"),
                              RerankerTrainConfig(alpha=1.0))


USER_DOCUMENTS = {"d1": "Berserk: a lone mercenary in a dark medieval fantasy", "d2": "Yotsuba: a cheerful girl",
                  "d3": "Vinland Saga: vikings, war and revenge", "d4": "Chi's Sweet Home: a kitten's days"}


def _user_table(path, judged: bool) -> str:
    """A store's own table: only query_id, query, a document id (sku) and the document's text (candidate)."""
    rows = [{"query_id": query_id, "query": query, "sku": sku, "candidate": text,
             **({"relevance": grades.get(sku, 0)} if judged else {})}
            for query_id, query, grades in (("u1", "dark fantasy war", {"d1": 3, "d3": 2}),
                                            ("u2", "cute slice of life", {"d2": 3, "d4": 3}))
            for sku, text in USER_DOCUMENTS.items()]
    storage.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def test_a_users_own_minimal_tables_go_through_labeling_and_training(tmp_path, tiny_cross_encoder, tiny_encoder):
    candidates = _user_table(tmp_path / "candidates.csv", judged=False)
    judged = _user_table(tmp_path / "judged.jsonl", judged=True)
    queries = tmp_path / "queries.csv"
    storage.write_table(pa.Table.from_pylist([{"query_id": "u1", "query": "dark fantasy war"},
                                              {"query_id": "u2", "query": "cute slice of life"}]), str(queries))
    scores, quarantine = str(tmp_path / "scores.parquet"), str(tmp_path / "q.parquet")
    labeled = run_reranker_teacher_labeling(candidates, scores, quarantine, str(tiny_cross_encoder),
                                            queries_uri=str(queries), top_k=3)
    # no retrieval_rank: top_k cannot choose, so every candidate is scored; candidate_text is the candidate
    assert labeled["pairs_scored"] == 8 and labeled["pairs_beyond_top_k"] == 0 and labeled["quarantined_rows"] == 0
    scored = storage.read_table(scores)
    assert scored.column("candidate_text").to_pylist() == scored.column("candidate").to_pylist()

    config = RerankerTrainConfig(epochs=1, batch_size=4, max_length=32, alpha=0.5)
    trained = run_reranker_training(scores, str(tiny_encoder), str(tmp_path / "student"), config,
                                    labelled_uri=judged, labelled_per_query=2)
    assert trained["train_queries"] == 2 and trained["labelled_pairs"] == 4 and trained["teacher_scored_pairs"] == 8
    assert (tmp_path / "student" / "config.json").exists()


def test_a_users_table_still_needs_query_id_query_sku_and_candidate(tmp_path, tiny_cross_encoder):
    path = tmp_path / "candidates.parquet"
    storage.write_table(pa.Table.from_pylist([{"query_id": "u1", "query": "dark", "sku": "d1"}]), str(path))
    with pytest.raises(DataContractError) as err:
        run_reranker_teacher_labeling(str(path), str(tmp_path / "s"), str(tmp_path / "q"), str(tiny_cross_encoder))
    assert err.value.column == "candidate"
    assert "needs query_id, query, sku, candidate; found query_id, query, sku" in str(err.value)


def test_the_bm25_baseline_of_a_table_without_bm25_score_ranks_each_querys_own_candidates():
    from mangadistill.core.retrieval import fill_missing_bm25

    query_ids = ["u1", "u1", "u1", "u2", "u2"]
    queries = ["vikings war", "vikings war", "vikings war", "cute kitten", "cute kitten"]
    texts = [USER_DOCUMENTS["d1"], USER_DOCUMENTS["d3"], USER_DOCUMENTS["d2"], "kitten days", "war"]
    scores = fill_missing_bm25(query_ids, queries, texts, [None, None, None, 0.7, 0.2])
    assert scores[1] > scores[0] and scores[1] > scores[2]  # Vinland Saga matches "vikings war"
    assert scores[3:].tolist() == pytest.approx([0.7, 0.2])  # a query with its own scores keeps them
