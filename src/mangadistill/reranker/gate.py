"""Evaluate a reranker student on held-out judged queries and decide whether it is promoted.

Quality is measured against the graded judgments (catalog facts), never against teacher scores, so a student
that copies teacher mistakes cannot pass by agreeing with its teacher. Each model reranks every eval query's
judged candidate set (`ranking_metrics`, NDCG with gain 2^rel - 1, ideal over the candidate set). The gated
metrics (names used in the gates YAML, resources/reranker_gates.yaml):

- ndcg_retained = student NDCG@10 / teacher NDCG@10; int8_ndcg_retained likewise for the int8 student
- student_ndcg_gain_vs_bm25 = student NDCG@10 − BM25 NDCG@10 (the reranker must beat its retrieval)
- latency_speedup_p50 = teacher p50 / student p50 latency to rerank `LATENCY_CANDIDATES` candidates of one
  query (one forward pass, PyTorch fp32, CPU, one thread each); int8_latency_speedup_p50 for ONNX int8
- student_int8_latency_p95_ms: the served model's p95 for that same request
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mangadistill.core import report as r
from mangadistill.core import storage
from mangadistill.core.benchmarking import measure_latency, path_size_mb, torch_threads
from mangadistill.core.contracts import DataContractError, validate_table
from mangadistill.core.events import distilled_model_eval, write_event
from mangadistill.core.gates import GateDecision, evaluate_gates, load_gates, packaged_gates_path, retained
from mangadistill.core.onnx_int8 import INT8_FILENAME, REPORT_FILENAME
from mangadistill.reranker.contracts import RERANK_CANDIDATES
from mangadistill.reranker.cross_encoder import DEFAULT_MAX_LENGTH, CrossEncoderScorer, OnnxCrossEncoder
from mangadistill.reranker.metrics import DEFAULT_MRR_THRESHOLD, mean_ranking_metrics, per_query_metrics

NDCG_K = 10
LATENCY_CANDIDATES = 50
LATENCY_QUERIES = 10
LATENCY_THREADS = 1
MODELS = ("bm25", "teacher", "student", "student_int8")
RERANKERS = ("teacher", "student", "student_int8")
_DISPLAY = {"bm25": "BM25 (retrieval only)", "teacher": "teacher (PyTorch fp32)",
            "student": "student (PyTorch fp32)", "student_int8": "student int8 (ONNX Runtime)"}


@dataclass
class RerankerGateOutcome:
    metrics: dict[str, float | None]
    decision: GateDecision
    event: dict

    @property
    def promote(self) -> bool:
        return self.decision.promote


def _weights_mb(model_dir: str) -> float:
    return sum(path_size_mb(str(p)) for p in Path(model_dir).glob("*.safetensors"))


def read_judged_candidates(eval_uri: str) -> tuple[pa.Table, int]:
    """The eval candidates (RERANK_CANDIDATES, bad rows quarantined) and the quarantined count; every row must
    carry a relevance judgment."""
    validated = validate_table(storage.read_table(eval_uri), RERANK_CANDIDATES, eval_uri)
    table = validated.table
    relevance = table.column("relevance").to_pylist()
    unjudged = [row for row, value in enumerate(relevance) if value is None]
    if unjudged:
        raise DataContractError(eval_uri, "relevance", unjudged[0],
                                f"{len(unjudged)} eval candidates have no relevance judgment")
    return table, validated.quarantine.num_rows


def _latency_requests(table: pa.Table, queries: int, candidates: int) -> list[tuple[list[str], list[str]]]:
    """Up to `queries` requests, each one query with `candidates` candidate texts: its own in BM25 order, topped
    up with other queries' candidate texts (table order) when it has fewer, since serving reranks a full BM25
    top-`candidates` however few candidates the eval set keeps per query (a pair's cost depends on its length
    only); fewer only when the whole table holds fewer rows."""
    query_ids = table.column("query_id").to_pylist()
    query_texts = table.column("query").to_pylist()
    texts = table.column("candidate_text").to_pylist()
    requests = []
    for query_id in list(dict.fromkeys(query_ids))[:queries]:
        own = [text for q, text in zip(query_ids, texts, strict=True) if q == query_id]
        others = [text for q, text in zip(query_ids, texts, strict=True) if q != query_id]
        chosen = (own + others)[:candidates]
        requests.append(([query_texts[query_ids.index(query_id)]] * len(chosen), chosen))
    return requests


def evaluate_reranker(
    eval_uri: str, teacher_dir: str, student_dir: str, int8_dir: str, k: int = NDCG_K,
    latency_queries: int = LATENCY_QUERIES, latency_candidates: int = LATENCY_CANDIDATES,
    mrr_threshold: float = DEFAULT_MRR_THRESHOLD, max_length: int = DEFAULT_MAX_LENGTH,
) -> tuple[dict[str, float | None], dict]:
    """All metrics (see module docstring) and the per-query material for the report; every model reads at
    most `max_length` tokens of query + candidate text."""
    table, quarantined = read_judged_candidates(eval_uri)
    query_ids = table.column("query_id").to_pylist()
    queries = table.column("query").to_pylist()
    texts = table.column("candidate_text").to_pylist()
    relevance = np.asarray(table.column("relevance").to_pylist(), dtype=np.float64)
    teacher = CrossEncoderScorer(teacher_dir, max_length)
    student = CrossEncoderScorer(student_dir, max_length)
    int8 = OnnxCrossEncoder(str(Path(int8_dir) / INT8_FILENAME), int8_dir, max_length, threads=LATENCY_THREADS)
    scores = {
        "bm25": np.asarray(table.column("bm25_score").to_pylist(), dtype=np.float64),
        "teacher": teacher.score(queries, texts, progress="teacher"),
        "student": student.score(queries, texts, progress="student"),
        "student_int8": int8.score(queries, texts),
    }
    metrics: dict[str, float | None] = {
        "eval_queries": float(len(set(query_ids))), "eval_pairs": float(len(query_ids)),
        "eval_quarantined_rows": float(quarantined), "ndcg_k": float(k),
    }
    per_query = {}
    for name, values in scores.items():
        per_query[name] = per_query_metrics(query_ids, relevance, values, k, mrr_threshold)
        means = mean_ranking_metrics(per_query[name])
        metrics[f"{name}_ndcg_at_{k}"] = means["ndcg"]
        metrics[f"{name}_mrr"] = means["mrr"]
    # which queries lack a relevant candidate depends on the judgments only, the same for every model
    metrics["eval_queries_without_relevant"] = mean_ranking_metrics(per_query["bm25"])["queries_without_relevant"]
    ndcg = {name: metrics[f"{name}_ndcg_at_{k}"] for name in MODELS}
    metrics["ndcg_retained"] = retained(ndcg["student"], ndcg["teacher"])
    metrics["int8_ndcg_retained"] = retained(ndcg["student_int8"], ndcg["teacher"])
    metrics["teacher_ndcg_gain_vs_bm25"] = ndcg["teacher"] - ndcg["bm25"]
    metrics["student_ndcg_gain_vs_bm25"] = ndcg["student"] - ndcg["bm25"]
    metrics["student_teacher_score_mae"] = float(np.mean(np.abs(scores["student"] - scores["teacher"])))

    requests = _latency_requests(table, latency_queries, latency_candidates)
    metrics["latency_candidates_per_query"] = float(np.mean([len(texts) for _, texts in requests]))
    runners = {
        "teacher": lambda batch: teacher.score(*batch[0], batch_size=latency_candidates),
        "student": lambda batch: student.score(*batch[0], batch_size=latency_candidates),
        "student_int8": lambda batch: int8.score(*batch[0], batch_size=latency_candidates),
    }
    for name, run in runners.items():
        with torch_threads(LATENCY_THREADS):
            timing = measure_latency(run, requests, batch_size=1, warmup=1, max_items=None)
        metrics[f"{name}_latency_p50_ms"] = timing["p50_ms"]
        metrics[f"{name}_latency_p95_ms"] = timing["p95_ms"]
    for name in ("student", "student_int8"):
        prefix = "" if name == "student" else "int8_"
        metrics[f"{prefix}latency_speedup_p50"] = metrics["teacher_latency_p50_ms"] / metrics[f"{name}_latency_p50_ms"]
        metrics[f"{prefix}latency_speedup_p95"] = metrics["teacher_latency_p95_ms"] / metrics[f"{name}_latency_p95_ms"]

    quant_report = json.loads((Path(int8_dir) / REPORT_FILENAME).read_text())
    metrics["teacher_size_mb"] = _weights_mb(teacher_dir)
    metrics["student_size_mb"] = _weights_mb(student_dir)
    metrics["student_int8_size_mb"] = path_size_mb(str(Path(int8_dir) / INT8_FILENAME))
    metrics["int8_size_ratio"] = quant_report.get("size_ratio")
    return metrics, {"per_query": per_query}


def run_reranker_gate(
    eval_uri: str, teacher_dir: str, student_dir: str, int8_dir: str, report_uri: str, event_uri: str,
    gates_uri: str = "", student_name: str = "reranker-student", teacher_name: str = "reranker-teacher",
    latency_queries: int = LATENCY_QUERIES, max_length: int = DEFAULT_MAX_LENGTH,
) -> RerankerGateOutcome:
    """Measure, apply the gates (packaged reranker gates when gates_uri is empty), write report and event."""
    gates = load_gates(gates_uri or packaged_gates_path("reranker"))
    metrics, plots = evaluate_reranker(eval_uri, teacher_dir, student_dir, int8_dir, latency_queries=latency_queries,
                                       max_length=max_length)
    decision = evaluate_gates(gates, metrics)
    event = distilled_model_eval(student_name, teacher_name, metrics, decision, gates_source=gates_uri or "packaged")
    write_event(event, event_uri)
    storage.write_text(report_uri, _report_html(metrics, plots, decision, student_name, teacher_name))
    return RerankerGateOutcome(metrics, decision, event)


def _report_html(metrics, plots, decision, student_name: str, teacher_name: str) -> str:
    k = int(metrics["ndcg_k"])
    quality_rows = [[_DISPLAY[name], metrics[f"{name}_ndcg_at_{k}"], metrics[f"{name}_mrr"]] for name in MODELS]
    speed_rows = [
        [_DISPLAY[name], metrics[f"{name}_latency_p50_ms"], metrics[f"{name}_latency_p95_ms"],
         metrics[f"{name}_size_mb"]]
        for name in RERANKERS
    ]
    tradeoff = r.scatter_tradeoff(
        {_DISPLAY[name]: (metrics[f"{name}_latency_p50_ms"], metrics[f"{name}_ndcg_at_{k}"]) for name in RERANKERS},
        xlabel=f"CPU p50 latency to rerank {metrics['latency_candidates_per_query']:.0f} candidates (ms)",
        ylabel=f"NDCG@{k} (held-out queries)", title=f"NDCG@{k} vs latency",
    )
    teacher_by_query = {q.query_id: q.ndcg for q in plots["per_query"]["teacher"]}
    losses = sorted(((teacher_by_query[q.query_id] - q.ndcg, q.query_id, teacher_by_query[q.query_id], q.ndcg)
                     for q in plots["per_query"]["student"] if not np.isnan(q.ndcg)), reverse=True)[:10]
    sections = [
        r.KeyValueSection("Run", {"student": student_name, "teacher": teacher_name,
                                  "held-out queries": metrics["eval_queries"],
                                  "judged (query, candidate) pairs": metrics["eval_pairs"],
                                  "rows quarantined": metrics["eval_quarantined_rows"],
                                  "queries without a relevant candidate (left out of means)":
                                      metrics["eval_queries_without_relevant"]}),
        r.TableSection(f"Ranking quality on held-out judged queries (NDCG@{k}, MRR)",
                       ["model", f"NDCG@{k}", "MRR"], quality_rows),
        r.FigureSection(f"NDCG@{k} vs CPU latency", tradeoff,
                        caption="one thread per model; a request is one query with its candidates"),
        r.TableSection("CPU latency per query (one thread) and size", ["model", "p50 ms", "p95 ms", "size MiB"],
                       speed_rows),
        r.TableSection(f"Queries where the student loses most NDCG@{k} against the teacher",
                       ["query id", "NDCG loss", "teacher", "student"],
                       [[query_id, loss, t, s] for loss, query_id, t, s in losses]),
    ]
    return r.render_html_report(f"Reranker distillation: {student_name}", decision, sections)
