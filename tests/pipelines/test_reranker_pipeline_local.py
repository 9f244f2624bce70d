"""The reranker pipeline run end to end with kfp.local through `mangadistill run reranker`.

Tiny models built from configs keep this fast; the quality figures come from `make bench-reranker` with the
real models.
"""

import json

import numpy as np
import onnxruntime as ort
import pytest
from sentence_transformers import CrossEncoder

from conftest import build_tiny_bert
from mangadistill.core import storage
from mangadistill_pipelines.cli import main
from mangadistill_pipelines.reranker_distillation import RERANKER_OUTPUTS, reranker_data_paths


@pytest.mark.slow
def test_reranker_pipeline_runs_end_to_end_through_the_cli(tiny_encoder, tmp_path, monkeypatch, capsys):
    teacher = build_tiny_bert(tmp_path / "teacher", labels=("relevance",), layers=2, seed=3)
    workdir, out = tmp_path / "work", tmp_path / "mangadistill-output" / "reranker"  # the default output folder
    lenient_gates = tmp_path / "gates.yaml"  # tiny models: gates they pass, so the promoted branch runs
    lenient_gates.write_text("version: 1\ngates:\n  - {metric: latency_speedup_p50, op: '>=', threshold: 0}\n")
    monkeypatch.chdir(tmp_path)
    code = main([
        "run", "reranker", "--workdir", str(workdir), "--param", f"teacher_model={teacher}",
        "--n-rerank-train", "6", "--n-rerank-production", "6", "--n-rerank-eval", "4", "--rerank-k", "8",
        "--param", f"student_model={tiny_encoder}", "--param", "epochs=1", "--param", "top_k=5",
        "--param", "latency_queries=1", "--param", "distill=margin_mse", "--param", f"gates_uri={lenient_gates}",
    ])
    assert code == 0
    assert not (workdir / "teachers").exists(), "--param teacher_model is the teacher: no demo teacher is built"
    for name in RERANKER_OUTPUTS.values():
        assert (out / name).exists(), name

    event = json.loads((out / RERANKER_OUTPUTS["event"]).read_text())
    assert event["event"] == "distilled_model_eval" and event["student"] == "reranker-student"
    assert {"ndcg_retained", "student_ndcg_gain_vs_bm25", "handwritten_student_vs_bm25"} <= set(event)
    assert set(event["gates"]) == {"latency_speedup_p50"} and event["promote"] is True  # the lenient gates
    assert event["eval_queries"] == 4
    assert event["latency_candidates_per_query"] == min(50, event["eval_pairs"])  # 50, or every eval pair
    report = (out / RERANKER_OUTPUTS["report"]).read_text()
    assert "NDCG@10 vs CPU latency" in report and "PROMOTE" in report
    # the run's event line (what the exit handler logs on a cluster), and the gate's copy for the exit task
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith('{"event"')]
    assert json.loads(line) == {**event, "pipeline": "reranker-distillation", "run_id": ""}
    (copy,) = (workdir / "pipeline_root" / "events").glob("*/distilled_model_eval.json")
    assert json.loads(copy.read_text()) == event

    # the held-out queries and the judged candidates the gate measured on, every candidate graded
    queries = storage.read_table(str(out / RERANKER_OUTPUTS["eval_queries"]))
    candidates = storage.read_table(str(out / RERANKER_OUTPUTS["eval_candidates"]))
    assert set(candidates.column("query_id").to_pylist()) == set(queries.column("query_id").to_pylist())
    assert candidates.column("relevance").null_count == 0 and candidates.num_rows == event["eval_pairs"]

    pairs = [(row["query"], row["candidate_text"]) for row in candidates.slice(0, 4).to_pylist()]
    scores = CrossEncoder(str(out / RERANKER_OUTPUTS["student"]), device="cpu").predict(pairs)
    assert scores.shape == (4,) and np.all((scores >= 0) & (scores <= 1))  # sigmoid scores, the teacher's scale
    session = ort.InferenceSession(str(out / RERANKER_OUTPUTS["student_int8"] / "model.int8.onnx"))
    assert session.get_outputs()[0].shape[-1] == 1

    # promoted: published as <models root>/<student name>/<run id>/, loadable without this project
    (version,) = (out / "published" / "reranker-student").iterdir()
    assert json.loads((version / "version.json").read_text())["student"] == "reranker-student"
    assert "| `latency_speedup_p50` |" in (version / "README.md").read_text()
    published = CrossEncoder(str(version), device="cpu").predict(pairs)
    assert np.allclose(published, scores, atol=1e-5)
    session = ort.InferenceSession(str(version / "onnx" / "model_qint8_dynamic.onnx"))
    assert session.get_outputs()[0].shape[-1] == 1


@pytest.mark.slow
def test_bootstrap_teacher_reranker_builds_a_one_logit_cross_encoder(tiny_encoder, tmp_path):
    workdir = tmp_path / "work"
    code = main(["bootstrap-teacher", "reranker", "--workdir", str(workdir), "--base-model", str(tiny_encoder),
                 "--n-rerank-train", "5", "--n-rerank-production", "2", "--n-rerank-eval", "2", "--rerank-k", "6"])
    assert code == 0
    teacher = workdir / "teachers" / "reranker"
    card = json.loads((teacher / "teacher_card.json").read_text())
    assert card["train_pairs"] > 0 and card["per_query"] == 4
    assert CrossEncoder(str(teacher), device="cpu").predict([("romance manga", "Nana. Josei.")]).shape == (1,)
    assert reranker_data_paths(workdir)["eval_candidates"].exists()
