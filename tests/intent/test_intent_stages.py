"""Stage functions: file-level contracts, clear errors on bad input, quarantine with reasons."""

import json

import pyarrow as pa
import pytest

from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError
from mangadistill.intent.ensemble import EnsembleConfig
from mangadistill.intent.labeling import LabelingConfig
from mangadistill.intent.labels import INTENTS
from mangadistill.intent.stages import run_distillation_training, run_soft_label_ensemble, run_teacher_labeling
from mangadistill.intent.training import TrainConfig

K = len(INTENTS)


def _one_hot(k: int) -> list[float]:
    return [1.0 if j == k else 0.0 for j in range(K)]


def test_labeling_quarantines_bad_rows_and_names_them(tmp_path, tiny_intent_classifier):
    log = tmp_path / "log.jsonl"
    rows = [{"message_id": f"m{i}", "text": f"where is order {i}"} for i in range(10)]
    rows[3]["text"] = "   "
    rows[7]["message_id"] = "m1"
    log.write_text("\n".join(json.dumps(r) for r in rows))
    metrics = run_teacher_labeling(str(log), str(tmp_path / "votes"), str(tmp_path / "q"),
                                   LabelingConfig(str(tiny_intent_classifier), adjudicator="none"))
    quarantine = storage.read_table(str(tmp_path / "q"))
    assert sorted(zip(quarantine.column("row").to_pylist(), quarantine.column("reason").to_pylist(), strict=True)) \
        == [(3, "empty text"), (7, "duplicate message_id")]
    assert quarantine.column("source").to_pylist() == [str(log)] * 2
    assert metrics["quarantined_rows"] == 2 and metrics["quarantined_empty_text"] == 1
    assert storage.read_table(str(tmp_path / "votes")).num_rows == 8


def test_labeling_missing_column_is_a_clear_error(tmp_path, tiny_intent_classifier):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"message_id": "a", "body": "hello"}))
    with pytest.raises(DataContractError) as err:
        run_teacher_labeling(str(log), str(tmp_path / "v"), str(tmp_path / "q"),
                             LabelingConfig(str(tiny_intent_classifier), adjudicator="none"))
    assert str(log) in str(err.value) and "'text'" in str(err.value)


def test_unreadable_file_is_a_clear_error(tmp_path, tiny_intent_classifier):
    bad = tmp_path / "log.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(storage.StorageError, match=r"log\.parquet"):
        run_teacher_labeling(str(bad), str(tmp_path / "v"), str(tmp_path / "q"),
                             LabelingConfig(str(tiny_intent_classifier), adjudicator="none"))


def _soft_rows(n: int) -> list[dict]:
    return [{"message_id": f"m{i}", "text": f"message number {i}", "soft_label": _one_hot(i % K),
             "hard_label": INTENTS[i % K], "entropy": 0.0, "members": ["classifier"], "members_agree": True}
            for i in range(n)]


def test_training_quarantines_soft_labels_that_do_not_sum_to_one(tmp_path, tiny_encoder):
    rows = _soft_rows(16)
    rows[5]["soft_label"] = [0.3] * K
    storage.write_table(pa.Table.from_pylist(rows), str(tmp_path / "soft.parquet"))
    metrics = run_distillation_training(str(tmp_path / "soft.parquet"), str(tiny_encoder), str(tmp_path / "student"),
                                        TrainConfig(epochs=1, batch_size=8), quarantine_uri=str(tmp_path / "q"))
    assert metrics["train_rows"] == 15 and metrics["quarantined_rows"] == 1
    reason = storage.read_table(str(tmp_path / "q")).column("reason")[0].as_py()
    assert "sum to" in reason
    with pytest.raises(DataContractError) as err:
        run_distillation_training(str(tmp_path / "soft.parquet"), str(tiny_encoder), str(tmp_path / "s2"),
                                  TrainConfig(epochs=1), on_bad_rows="fail")
    assert (err.value.column, err.value.row) == ("soft_label", 5)


def test_ensemble_stage_writes_report_and_loggable_metrics(tmp_path):
    votes = [{"message_id": f"m{i}", "text": "t", "classifier_probs": _one_hot(i % K), "rule_intent": None,
              "rule_ids": [], "adjudicator_probs": None, "members": ["classifier"], "classifier_margin": 1.0,
              "classifier_entropy": 0.0} for i in range(8)]
    votes[2]["classifier_probs"] = [float("nan")] * K
    storage.write_table(pa.Table.from_pylist(votes), str(tmp_path / "votes.parquet"))
    metrics = run_soft_label_ensemble(str(tmp_path / "votes.parquet"), str(tmp_path / "soft"),
                                      str(tmp_path / "report.json"), str(tmp_path / "q"), EnsembleConfig())
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rows"] == 7 and report["quarantined_rows"] == 1
    assert all(isinstance(v, float) and v == v for v in metrics.values())  # no NaN reaches KFP Metrics
    assert "classifier_vs_adjudicator_agree_rate" not in metrics  # NaN without adjudicator rows


# --- reranker stages: bad input is quarantined with reasons or raises naming file, column and row ----------

@pytest.fixture(scope="module")
def rerank_splits() -> dict[str, pa.Table]:
    from mangadistill.sample_data.queries import build_reranker_splits

    return build_reranker_splits(seed=5, n_train=4, n_production=4, n_eval=2, k=5)


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    from conftest import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-cross-encoder"), labels=("relevance",))


def test_reranker_labeling_quarantines_duplicate_pairs_and_queries_without_candidates(
        tmp_path, rerank_splits, tiny_cross_encoder):
    from mangadistill.intent.stages import teacher_labeling_stage
    from mangadistill.reranker.contracts import RERANK_QUERIES

    candidates = rerank_splits["production_candidates"]
    duplicated = pa.concat_tables([candidates, candidates.slice(3, 1)])
    queries = pa.concat_tables([rerank_splits["production_queries"], pa.Table.from_pylist(
        [{"query_id": "q-orphan", "query": "manga about pirates", "split": "production", "kind": "facets",
          "constraints": ["theme pirates"]}], schema=RERANK_QUERIES)])
    for name, table in (("candidates", duplicated), ("queries", queries)):
        storage.write_table(table, str(tmp_path / f"{name}.parquet"))
    out = {name: str(tmp_path / name) for name in ("scores", "votes", "quarantine")}
    metrics = teacher_labeling_stage(
        "reranker", out["quarantine"], str(tiny_cross_encoder), candidates_uri=str(tmp_path / "candidates.parquet"),
        queries_uri=str(tmp_path / "queries.parquet"), teacher_scores_uri=out["scores"],
        member_votes_uri=out["votes"], top_k=3)
    quarantine = storage.read_table(out["quarantine"]).to_pylist()
    assert sorted((row["reason"], row["row"]) for row in quarantine) == [
        ("duplicate (query_id, sku) pair", candidates.num_rows), ("query has no candidates", 4)]
    assert metrics["quarantined_query_has_no_candidates"] == 1 and metrics["quarantined_rows"] == 2
    scores = storage.read_table(out["scores"])
    assert scores.num_rows == metrics["pairs_scored"] == 4 * 3  # top_k=3 of 5 BM25 candidates per query
    assert metrics["pairs_beyond_top_k"] == 4 * 2
    assert all(0.0 <= s <= 1.0 for s in scores.column("teacher_score").to_pylist())
    assert storage.read_table(out["votes"]).num_rows == 0  # the intent output exists, empty, for the launcher


def test_reranker_labeling_with_a_nan_teacher_is_a_clear_error(tmp_path, rerank_splits, tiny_cross_encoder):
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    from mangadistill.intent.stages import teacher_labeling_stage

    broken = tmp_path / "nan-teacher"
    shutil.copytree(tiny_cross_encoder, broken)
    model = AutoModelForSequenceClassification.from_pretrained(broken)
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    model.save_pretrained(broken)
    storage.write_table(rerank_splits["production_candidates"], str(tmp_path / "candidates.parquet"))
    with pytest.raises(DataContractError) as err:
        teacher_labeling_stage("reranker", str(tmp_path / "q"), str(broken),
                               candidates_uri=str(tmp_path / "candidates.parquet"),
                               teacher_scores_uri=str(tmp_path / "scores"))
    assert (err.value.column, err.value.row) == ("teacher_score", 0)
    assert "NaN teacher score" in str(err.value) and str(broken) in str(err.value)


def test_reranker_training_quarantines_nan_and_out_of_range_teacher_scores(tmp_path, rerank_splits, tiny_encoder):
    from mangadistill.intent.stages import distillation_training_stage
    from mangadistill.reranker.cross_encoder import RerankerTrainConfig

    rows = [{**row, "teacher_score": 0.5} for row in rerank_splits["production_candidates"].to_pylist()]
    rows[2]["teacher_score"], rows[7]["teacher_score"] = float("nan"), 1.5
    storage.write_table(pa.Table.from_pylist(rows), str(tmp_path / "scores.parquet"))
    storage.write_table(rerank_splits["train_candidates"], str(tmp_path / "judged.parquet"))
    config = RerankerTrainConfig(epochs=1, batch_size=8, max_length=48, alpha=0.5)
    metrics = distillation_training_stage(
        "reranker", str(tiny_encoder), str(tmp_path / "student"), teacher_scores_uri=str(tmp_path / "scores.parquet"),
        labelled_uri=str(tmp_path / "judged.parquet"), reranker_config=config, labelled_per_query=3,
        quarantine_uri=str(tmp_path / "q"))
    quarantine = storage.read_table(str(tmp_path / "q")).to_pylist()
    assert [(row["row"], row["column"], row["reason"]) for row in quarantine] == [
        (2, "teacher_score", "NaN teacher score"), (7, "teacher_score", "teacher score outside [0, 1]")]
    assert metrics["teacher_scored_pairs"] == len(rows) - 2 and metrics["labelled_pairs"] == 4 * 3
    assert (tmp_path / "student" / "config.json").exists()

    with pytest.raises(ValueError, match=r"alpha=1\.0"):  # nothing judged, and alpha 1 ignores teacher scores
        distillation_training_stage("reranker", str(tiny_encoder), str(tmp_path / "s2"),
                                    teacher_scores_uri=str(tmp_path / "scores.parquet"),
                                    reranker_config=RerankerTrainConfig(alpha=1.0))


def test_stage_entry_points_name_a_missing_input_or_unknown_task(tmp_path):
    from mangadistill.intent.stages import distillation_training_stage, teacher_labeling_stage

    with pytest.raises(ValueError, match="task must be one of"):
        teacher_labeling_stage("ranking", str(tmp_path / "q"), "minilm-l3")
    with pytest.raises(ValueError, match=r"needs the input.*candidates"):
        teacher_labeling_stage("reranker", str(tmp_path / "q"), "minilm-l3")
    with pytest.raises(ValueError, match=r"needs the input.*soft_labels"):
        distillation_training_stage("intent", "minilm-l3", str(tmp_path / "s"))
