"""Reranker gate: NDCG/MRR of BM25, teacher, student and int8 student on judged held-out queries and on the
hand-written set, latency, gates, report and event."""

from __future__ import annotations

import html
import json
from importlib import resources

import numpy as np
import pyarrow as pa
import pytest

from conftest import build_tiny_bert
from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError
from mangadistill.core.events import EVENT_NAME
from mangadistill.core.gates import load_gates, packaged_gates_path
from mangadistill.reranker import gate
from mangadistill.reranker.cross_encoder import CrossEncoderScorer, quantize_cross_encoder
from mangadistill.reranker.gate import LATENCY_CANDIDATES, evaluate_reranker, run_reranker_gate
from mangadistill.reranker.metrics import mean_ranking_metrics, per_query_metrics
from mangadistill.sample_data.catalog import catalog_records
from mangadistill.sample_data.queries import build_reranker_splits

LATENCY_QUERIES = 2
CATALOG = catalog_records()
HANDWRITTEN_QUERIES = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Untrained tiny one-logit rerankers (different seeds) and the student's int8 export."""
    root = tmp_path_factory.mktemp("reranker-gate")
    teacher = build_tiny_bert(root / "teacher", labels=("relevance",), layers=2, seed=1)
    student = build_tiny_bert(root / "student", labels=("relevance",), layers=1, seed=2)
    quantize_cross_encoder(str(student), str(root / "int8"), max_length=64)
    return {"teacher": str(teacher), "student": str(student), "int8": str(root / "int8")}


@pytest.fixture(scope="module")
def eval_uri(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("eval") / "eval_candidates.parquet")
    storage.write_table(build_reranker_splits(seed=4, n_train=1, n_production=1, n_eval=4, k=6)["eval_candidates"],
                        uri)
    return uri


@pytest.fixture(scope="module")
def handwritten_uri(tmp_path_factory) -> str:
    """The packaged hand-written set's first queries, as a user's file (keeps the tiny models' runs short)."""
    packaged = resources.files("mangadistill.resources").joinpath(gate.HANDWRITTEN_EVAL_FILE).read_text()
    path = tmp_path_factory.mktemp("handwritten") / "handwritten.jsonl"
    path.write_text("\n".join(packaged.splitlines()[:HANDWRITTEN_QUERIES]) + "\n")
    return str(path)


def test_metrics_are_computed_per_model_on_aligned_scores(models, eval_uri, handwritten_uri):
    metrics, plots = evaluate_reranker(eval_uri, models["teacher"], models["student"], models["int8"], CATALOG,
                                       handwritten_eval_uri=handwritten_uri, latency_queries=LATENCY_QUERIES)
    table = storage.read_table(eval_uri)
    bm25 = mean_ranking_metrics(per_query_metrics(table["query_id"].to_pylist(), table["relevance"].to_pylist(),
                                                  table["bm25_score"].to_pylist()))
    assert metrics["bm25_ndcg_at_10"] == pytest.approx(bm25["ndcg"])
    assert metrics["bm25_mrr"] == pytest.approx(bm25["mrr"])
    assert metrics["eval_queries"] == 4 and metrics["eval_pairs"] == table.num_rows
    assert metrics["ndcg_retained"] == pytest.approx(metrics["student_ndcg_at_10"] / metrics["teacher_ndcg_at_10"])
    assert metrics["student_ndcg_gain_vs_bm25"] == pytest.approx(
        metrics["student_ndcg_at_10"] - metrics["bm25_ndcg_at_10"])
    assert metrics["latency_speedup_p50"] == pytest.approx(
        metrics["teacher_latency_p50_ms"] / metrics["student_latency_p50_ms"])
    # each timed request reranks LATENCY_CANDIDATES texts, topped up from other queries (this table has fewer)
    assert metrics["latency_candidates_per_query"] == min(LATENCY_CANDIDATES, table.num_rows)
    for name in ("teacher", "student", "student_int8"):
        assert 0 <= metrics[f"{name}_ndcg_at_10"] <= 1 and metrics[f"{name}_latency_p95_ms"] > 0
    assert len(plots["generated"]["per_query"]["student"]) == 4
    assert metrics["handwritten_queries"] == HANDWRITTEN_QUERIES
    pool = HANDWRITTEN_QUERIES * gate.HANDWRITTEN_POOL
    assert metrics["handwritten_pairs"] == pool + metrics["handwritten_judged_added"]
    for name in ("bm25", "teacher", "student", "student_int8"):
        assert 0 <= metrics[f"handwritten_{name}_ndcg_at_10"] <= 1
        assert 0 <= metrics[f"handwritten_{name}_query_interaction_share"] <= 1
    assert metrics["handwritten_student_vs_bm25"] == pytest.approx(
        metrics["handwritten_student_ndcg_at_10"] - metrics["handwritten_bm25_ndcg_at_10"])


def test_a_student_identical_to_its_teacher_retains_all_ndcg(models, eval_uri, handwritten_uri):
    metrics, _ = evaluate_reranker(eval_uri, models["student"], models["student"], models["int8"], CATALOG,
                                   handwritten_eval_uri=handwritten_uri, latency_queries=1)
    assert metrics["ndcg_retained"] == 1.0 and metrics["handwritten_ndcg_retained"] == 1.0
    assert metrics["student_teacher_score_mae"] == 0.0


def test_gate_writes_report_and_event_and_decides_by_the_gates(models, eval_uri, handwritten_uri, tmp_path):
    gates = tmp_path / "gates.yaml"
    gates.write_text('version: 1\ngates:\n  - metric: eval_queries\n    op: ">="\n    threshold: 4\n'
                     '  - metric: ndcg_retained\n    op: ">="\n    threshold: 0\n')
    outcome = run_reranker_gate(eval_uri, models["teacher"], models["student"], models["int8"],
                                str(tmp_path / "report.html"), str(tmp_path / "event.json"), str(gates),
                                latency_queries=LATENCY_QUERIES, catalog=CATALOG,
                                handwritten_eval_uri=handwritten_uri)
    assert outcome.promote
    event = json.loads((tmp_path / "event.json").read_text())
    assert event["event"] == EVENT_NAME and event["promote"] is True
    assert event["gates"] == {"eval_queries": True, "ndcg_retained": True}
    assert event["student_ndcg_at_10"] == pytest.approx(outcome.metrics["student_ndcg_at_10"])
    page = (tmp_path / "report.html").read_text()
    assert "NDCG@10 vs CPU latency" in page and "data:image/png;base64" in page and "PROMOTE" in page
    # both sets side by side, per kind, the query-blind check, and the worst queries by their text
    assert "hand-written NDCG@10" in page and "generated NDCG@10" in page
    assert "per query kind" in page and "Query-blind check" in page and "query interaction share" in page
    handwritten = [json.loads(line) for line in storage.read_text(handwritten_uri).splitlines()]
    for entry in handwritten:
        assert f"<td>{html.escape(entry['query'])}</td>" in page, entry["query"]
        assert f"<td>{entry['kind']}</td>" in page
    for query in storage.read_table(eval_uri)["query"].unique().to_pylist():
        assert f"<td>{html.escape(query)}</td>" in page, query


def test_packaged_gates_cover_the_reranker_targets_and_fail_an_untrained_student(models, eval_uri, handwritten_uri,
                                                                                 tmp_path):
    gated = {gate.metric: gate for gate in load_gates(packaged_gates_path("reranker"))}
    assert gated["ndcg_retained"].threshold == 0.97 and gated["latency_speedup_p50"].threshold == 5
    assert {(name, gated[name].op, gated[name].threshold) for name in gated if name.startswith("handwritten_")} == {
        ("handwritten_student_vs_bm25", ">=", 0.0), ("handwritten_ndcg_retained", ">=", 0.97),
        ("handwritten_int8_drop", "<=", 0.01), ("handwritten_student_top1_repeat_share", "<=", 0.2),
        ("handwritten_student_query_interaction_share", ">=", 0.3)}
    outcome = run_reranker_gate(eval_uri, models["teacher"], models["student"], models["int8"],
                                str(tmp_path / "report.html"), str(tmp_path / "event.json"),
                                latency_queries=LATENCY_QUERIES, catalog=CATALOG, handwritten_eval_uri=handwritten_uri)
    results = {result.metric: result for result in outcome.decision.results}
    assert set(results) == set(gated)
    assert outcome.promote == all(result.passed for result in results.values())
    assert ("DO NOT PROMOTE" in (tmp_path / "report.html").read_text()) == (not outcome.promote)


def test_eval_rows_without_judgment_are_refused(models, tmp_path, eval_uri):
    table = storage.read_table(eval_uri)
    relevance = table["relevance"].to_pylist()
    relevance[3] = None
    unjudged = table.set_column(table.schema.get_field_index("relevance"), "relevance",
                                pa.array(relevance, type=pa.int8()))
    uri = str(tmp_path / "unjudged.parquet")
    storage.write_table(unjudged, uri)
    with pytest.raises(DataContractError, match=r"column 'relevance', row 3: 1 eval candidates have no relevance"):
        evaluate_reranker(uri, models["teacher"], models["student"], models["int8"], CATALOG, latency_queries=1)


class QueryBlindStudent(CrossEncoderScorer):
    """The student cross-encoder made query-blind: it reads every candidate with the same query."""

    def score(self, queries, documents, batch_size=32, progress=None) -> np.ndarray:
        return super().score(["manga"] * len(queries), documents, batch_size, progress)


def test_a_query_blind_student_is_not_promoted(models, eval_uri, handwritten_uri, tmp_path, monkeypatch):
    student = models["student"]
    monkeypatch.setattr(gate, "CrossEncoderScorer", lambda model_dir, max_length: (
        QueryBlindStudent if model_dir == student else CrossEncoderScorer)(model_dir, max_length))
    outcome = run_reranker_gate(eval_uri, models["teacher"], student, models["int8"], str(tmp_path / "report.html"),
                                str(tmp_path / "event.json"), latency_queries=1, catalog=CATALOG,
                                handwritten_eval_uri=handwritten_uri)
    assert outcome.metrics["handwritten_student_query_interaction_share"] < 1e-3
    assert "handwritten_student_query_interaction_share" in {result.metric for result in outcome.decision.failed}
    assert not outcome.promote and "DO NOT PROMOTE" in (tmp_path / "report.html").read_text()
