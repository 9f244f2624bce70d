"""reranker_teacher_labeling alone with kfp.local: a tiny cross-encoder teacher scores the sample candidates."""

from typing import NamedTuple

import pyarrow as pa
from kfp import dsl, local
from kfp.dsl import Dataset, Metrics

from conftest import build_tiny_bert
from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.reranker.contracts import RERANK_QUERIES, RERANK_TEACHER_SCORES
from mangadistill.sample_data.queries import build_reranker_splits
from mangadistill_components.reranker.teacher_labeling import reranker_teacher_labeling

TOP_K = 3


class LabelingOutputs(NamedTuple):
    teacher_scores: Dataset
    quarantine: Dataset
    metrics: Metrics


@dsl.pipeline(name="reranker-teacher-labeling-alone")
def labeling_alone(candidates_uri: str, queries_uri: str, teacher: str, top_k: int) -> LabelingOutputs:
    candidates = dsl.importer(artifact_uri=candidates_uri, artifact_class=dsl.Dataset).output
    queries = dsl.importer(artifact_uri=queries_uri, artifact_class=dsl.Dataset).output
    task = reranker_teacher_labeling(candidates=candidates, queries=queries, teacher_model=teacher, top_k=top_k,
                                     max_length=64)
    return LabelingOutputs(task.outputs["teacher_scores"], task.outputs["quarantine"], task.outputs["metrics"])


def test_teacher_scores_the_top_k_and_quarantines_duplicates_and_queries_without_candidates(tmp_path):
    splits = build_reranker_splits(seed=5, n_train=2, n_production=4, n_eval=2, k=5)
    candidates = splits["production_candidates"]
    duplicated = pa.concat_tables([candidates, candidates.slice(0, 1)])
    orphan = pa.Table.from_pylist([{"query_id": "q-orphan", "query": "a query nobody retrieved for",
                                    "split": "production", "kind": "title", "constraints": []}],
                                  schema=RERANK_QUERIES)
    queries = pa.concat_tables([splits["production_queries"], orphan])
    storage.write_table(duplicated, str(tmp_path / "candidates.parquet"))
    storage.write_table(queries, str(tmp_path / "queries.parquet"))
    teacher = build_tiny_bert(tmp_path / "teacher", labels=("relevance",), layers=1, seed=3)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = labeling_alone(candidates_uri=str(tmp_path / "candidates.parquet"),
                         queries_uri=str(tmp_path / "queries.parquet"), teacher=str(teacher), top_k=TOP_K)

    scores = storage.read_table(run.outputs["teacher_scores"].path)
    assert validate_table(scores, RERANK_TEACHER_SCORES, "scores", on_bad_rows="fail").table.num_rows == scores.num_rows
    within_top_k = sum(rank is None or rank <= TOP_K for rank in candidates.column("retrieval_rank").to_pylist())
    assert scores.num_rows == within_top_k
    assert all(0.0 <= score <= 1.0 for score in scores.column("teacher_score").to_pylist())

    quarantine = storage.read_table(run.outputs["quarantine"].path).to_pylist()
    reasons = {row["reason"] for row in quarantine}
    assert "query has no candidates" in reasons and any("duplicate" in reason for reason in reasons)
    metrics = run.outputs["metrics"].metadata
    assert metrics["pairs_scored"] == within_top_k and metrics["queries"] == 4
    assert metrics["pairs_beyond_top_k"] == candidates.num_rows - within_top_k
    assert metrics["quarantined_rows"] == len(quarantine) == 2
