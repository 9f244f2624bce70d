"""reranker_gate_check alone with kfp.local: tiny teacher, student and int8 student ranked on judged queries and
on a user's hand-written set."""

import html
import json
from pathlib import Path
from typing import NamedTuple

from kfp import dsl, local
from kfp.dsl import HTML, Artifact, Metrics

from conftest import build_tiny_bert
from mangadistill.core import storage
from mangadistill.reranker.cross_encoder import quantize_cross_encoder
from mangadistill.sample_data.queries import build_reranker_splits
from mangadistill_components.reranker.gate_check import reranker_gate_check


class GateOutputs(NamedTuple):
    metrics: Metrics
    report: HTML
    event: Artifact
    promote: bool


@dsl.pipeline(name="reranker-gate-check-alone")
def gate_alone(eval_uri: str, student_uri: str, int8_uri: str, teacher: str, handwritten_uri: str) -> GateOutputs:
    eval_candidates = dsl.importer(artifact_uri=eval_uri, artifact_class=dsl.Dataset).output
    student = dsl.importer(artifact_uri=student_uri, artifact_class=dsl.Model).output
    quantized = dsl.importer(artifact_uri=int8_uri, artifact_class=dsl.Model).output
    task = reranker_gate_check(eval_candidates=eval_candidates, student=student, quantized=quantized,
                               teacher_model=teacher, latency_queries=1, max_length=48, student_name="tiny-student",
                               handwritten_eval_uri=handwritten_uri)
    return GateOutputs(task.outputs["metrics"], task.outputs["report"], task.outputs["event"],
                       task.outputs["promote"])


def test_gate_ranks_every_model_on_the_judged_queries_and_writes_report_and_event(tmp_path):
    splits = build_reranker_splits(seed=5, n_train=2, n_production=2, n_eval=3, k=5)
    storage.write_table(splits["eval_candidates"], str(tmp_path / "eval.parquet"))
    teacher = build_tiny_bert(tmp_path / "teacher", labels=("relevance",), layers=2, seed=3)
    student = build_tiny_bert(tmp_path / "student", labels=("relevance",), layers=1, seed=4)
    quantize_cross_encoder(str(student), str(tmp_path / "student-int8"), max_length=48)
    handwritten = [
        {"query_id": "mine-1", "query": "pirate adventure on the sea", "kind": "plot",
         "judgments": [{"sku": "MA-00001", "title": "One Piece", "grade": 3}]},
        {"query_id": "mine-2", "query": "ninjas & their villages", "kind": "single_word",
         "judgments": [{"sku": "MA-00002", "title": "Naruto", "grade": 3}]},
        {"query_id": "mine-3", "query": "a boy who wants to be a ninja", "kind": "plot",
         "judgments": [{"sku": "MA-00002", "title": "Naruto", "grade": 3},
                       {"sku": "MA-00090", "title": "Flame of Recca", "grade": 1}]},
    ]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in handwritten))

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = gate_alone(eval_uri=str(tmp_path / "eval.parquet"), student_uri=str(student),
                     int8_uri=str(tmp_path / "student-int8"), teacher=str(teacher),
                     handwritten_uri=str(tmp_path / "mine.jsonl"))

    event = json.loads(Path(run.outputs["event"].path).read_text())
    assert event["event"] == "distilled_model_eval" and event["student"] == "tiny-student"
    assert event["teacher"] == "reranker-teacher" and event["eval_queries"] == 3
    assert set(event["gates"]) >= {"ndcg_retained", "student_ndcg_gain_vs_bm25", "latency_speedup_p50",
                                   "handwritten_student_vs_bm25", "handwritten_student_query_interaction_share"}
    assert run.outputs["promote"] is event["promote"]
    report = Path(run.outputs["report"].path).read_text()
    assert "NDCG@10 vs CPU latency" in report
    # the user's hand-written set, not the packaged one, is what the gate read
    assert all(f"<td>{html.escape(entry['query'])}</td>" in report for entry in handwritten)
    metrics = run.outputs["metrics"].metadata
    assert {"bm25_ndcg_at_10", "teacher_ndcg_at_10", "student_ndcg_at_10", "student_int8_ndcg_at_10"} <= set(metrics)
    assert metrics["eval_pairs"] == splits["eval_candidates"].num_rows
    assert metrics["handwritten_queries"] == 3 and event["handwritten_queries"] == 3
    assert metrics["handwritten_kind_plot_queries"] == 2
    assert {"handwritten_student_ndcg_at_10", "handwritten_student_top1_repeat_share"} <= set(metrics)
