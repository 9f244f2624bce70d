"""reranker_distillation_training alone with kfp.local: a tiny student on teacher scores and judged pairs."""

import json
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
from kfp import dsl, local
from kfp.dsl import Dataset, Metrics, Model
from sentence_transformers import CrossEncoder

from mangadistill.core import storage
from mangadistill.sample_data.queries import build_reranker_splits
from mangadistill_components.reranker.distillation_training import reranker_distillation_training

LABELLED_PER_QUERY = 3


class TrainingOutputs(NamedTuple):
    model: Model
    quarantine: Dataset
    metrics: Metrics


@dsl.pipeline(name="reranker-distillation-training-alone")
def training_alone(teacher_scores_uri: str, labelled_uri: str, student: str) -> TrainingOutputs:
    teacher_scores = dsl.importer(artifact_uri=teacher_scores_uri, artifact_class=dsl.Dataset).output
    labelled = dsl.importer(artifact_uri=labelled_uri, artifact_class=dsl.Dataset).output
    task = reranker_distillation_training(
        teacher_scores=teacher_scores, labelled_pairs=labelled, student_model=student, alpha=0.5,
        labelled_per_query=LABELLED_PER_QUERY, epochs=1, batch_size=8, learning_rate=1e-3, max_length=48,
    )
    return TrainingOutputs(task.outputs["model"], task.outputs["quarantine"], task.outputs["metrics"])


def test_student_trains_on_teacher_scores_and_judged_pairs_and_bad_scores_are_quarantined(tmp_path, tiny_encoder):
    splits = build_reranker_splits(seed=5, n_train=3, n_production=3, n_eval=2, k=5)
    rows = [{**row, "teacher_score": 0.5} for row in splits["production_candidates"].to_pylist()]
    rows[1]["teacher_score"], rows[2]["teacher_score"] = float("nan"), 1.5
    scores = pa.Table.from_pylist([{key: row[key] for key in (
        "query_id", "query", "sku", "candidate", "candidate_text", "teacher_score", "relevance")} for row in rows])
    storage.write_table(scores, str(tmp_path / "scores.parquet"))
    storage.write_table(splits["train_candidates"], str(tmp_path / "judged.parquet"))

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = training_alone(teacher_scores_uri=str(tmp_path / "scores.parquet"),
                         labelled_uri=str(tmp_path / "judged.parquet"), student=str(tiny_encoder))

    student = Path(run.outputs["model"].path)
    assert json.loads((student / "config.json").read_text())["id2label"] == {"0": "relevance"}  # one logit
    report = json.loads((student / "training_report.json").read_text())
    assert report["config"]["alpha"] == 0.5 and report["config"]["max_length"] == 48
    assert CrossEncoder(str(student), device="cpu").predict([("romance manga", "Nana. Josei.")]).shape == (1,)

    quarantine = storage.read_table(run.outputs["quarantine"].path).to_pylist()
    assert {row["reason"] for row in quarantine} == {"NaN teacher score", "teacher score outside [0, 1]"}
    metrics = run.outputs["metrics"].metadata
    judged_queries = len(set(splits["train_candidates"].column("query_id").to_pylist()))
    assert metrics["quarantined_rows"] == 2 and metrics["teacher_scored_pairs"] == len(rows) - 2
    assert metrics["labelled_pairs"] == judged_queries * LABELLED_PER_QUERY
    assert metrics["train_pairs"] == len(rows) - 2 + judged_queries * LABELLED_PER_QUERY
