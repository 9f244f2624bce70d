"""Evaluate a reranker student on held-out judged queries and decide whether it is promoted.

Quality is measured against the graded judgments (catalog facts), never against teacher scores, so a student
that copies teacher mistakes cannot pass by agreeing with its teacher. Each model reranks every eval query's
judged candidate set (`metrics`, NDCG with gain 2^rel - 1, ideal over the candidate set). The gated
metrics (names used in the gates YAML, resources/reranker_gates.yaml):

- ndcg_retained = student NDCG@10 / teacher NDCG@10; int8_ndcg_retained likewise for the int8 student
- student_ndcg_gain_vs_bm25 = student NDCG@10 − BM25 NDCG@10 (the reranker must beat its retrieval)
- latency_speedup_p50 = teacher p50 / student p50 latency to rerank `LATENCY_CANDIDATES` candidates of one
  query (one forward pass, PyTorch fp32, CPU, one thread each); int8_latency_speedup_p50 for ONNX int8
- student_int8_latency_p95_ms: the served model's p95 for that same request

Beside the generated held-out split, the hand-written set (resources/HANDWRITTEN.md: natural queries a person
wrote and graded 0-3 against the catalog; never used for training or for choosing defaults, or a user's JSONL
of the same shape) is ranked the way serving ranks: per query, BM25's top `HANDWRITTEN_POOL` over the catalog
plus every judged title BM25 missed (in BM25 order), unlisted titles grade 0, each candidate read as the
generated split's candidates are (`model_document_text`). Its metrics carry the prefix `handwritten_`:

- handwritten_{bm25,teacher,student,student_int8}_ndcg_at_10 and _mrr; per query kind
  handwritten_kind_<kind>_{bm25,teacher,student}_ndcg_at_10
- handwritten_ndcg_retained = student / teacher NDCG@10; handwritten_student_vs_bm25 = student − BM25 NDCG@10;
  handwritten_int8_drop = student − int8 student NDCG@10
- query-blind checks per model (`metrics.top1_repeat`, `metrics.query_interaction_share`):
  handwritten_<model>_top1_repeat_share = max over titles of the share of queries whose reranked top 1 is that
  title; handwritten_<model>_query_interaction_share = 1 − |Q|·Σ_d c_d² / Σ W², over every hand-written query
  scored against the `BLIND_CHECK_CANDIDATES` candidates most frequent in the pools (W: scores minus their
  query's mean, c_d: candidate d's mean of W); 0 for a scorer that reads only the candidate
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa

from mangadistill.core import report as r
from mangadistill.core import storage
from mangadistill.core.benchmarking import measure_latency, path_size_mb, torch_threads, weights_size_mb
from mangadistill.core.contracts import DataContractError, validate_table
from mangadistill.core.events import distilled_model_eval, write_event
from mangadistill.core.gates import GateOutcome, evaluate_gates, load_gates, packaged_gates_path, retained
from mangadistill.core.onnx_int8 import INT8_FILENAME, REPORT_FILENAME
from mangadistill.core.retrieval import CatalogIndex, catalog_document, fill_missing_bm25
from mangadistill.reranker.contracts import RELEVANCE_GRADES, RERANK_CANDIDATES
from mangadistill.reranker.cross_encoder import DEFAULT_MAX_LENGTH, CrossEncoderScorer, OnnxCrossEncoder
from mangadistill.reranker.metrics import (
    DEFAULT_MRR_THRESHOLD,
    QueryRanking,
    mean_ranking_metrics,
    per_query_metrics,
    query_interaction_share,
    top1_per_query,
    top1_repeat,
)

NDCG_K = 10
LATENCY_CANDIDATES = 50
LATENCY_QUERIES = 10
LATENCY_THREADS = 1
MODELS = ("bm25", "teacher", "student", "student_int8")
RERANKERS = ("teacher", "student", "student_int8")
_DISPLAY = {"bm25": "BM25 (retrieval only)", "teacher": "teacher (PyTorch fp32)",
            "student": "student (PyTorch fp32)", "student_int8": "student int8 (ONNX Runtime)"}
HANDWRITTEN = "handwritten_"
HANDWRITTEN_EVAL_FILE = "reranker_eval_handwritten.jsonl"
"""The packaged hand-written set (resources/HANDWRITTEN.md): never used for training or for choosing defaults."""
HANDWRITTEN_POOL = 50
"""BM25 candidates per hand-written query: what serving reranks."""
BLIND_CHECK_CANDIDATES = 20
"""The common candidates every hand-written query is scored against for `query_interaction_share`: the most
frequent in the pools (in the packaged set each is in at least 72 of the 95 pools, so about 400 extra pairs per
model)."""
KIND_MODELS = ("bm25", "teacher", "student")
WORST_QUERIES = 10

PairScorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]
"""score(queries, candidate_texts) -> one score per pair (higher ranks first)."""


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


class HandwrittenEvalError(DataContractError):
    """A hand-written eval file that cannot be used; the message names the file, the line (1-based) and the
    field (`judgments[2].grade`)."""

    def __init__(self, source: str, line: int | None, field: str | None, problem: str):
        where = source + (f", line {line}" if line is not None else "") + (f", field '{field}'" if field else "")
        ValueError.__init__(self, f"{where}: {problem}")
        self.source, self.column, self.row, self.problem, self.line = source, field, None, problem, line


@dataclass(frozen=True)
class Judgment:
    sku: str
    title: str
    grade: int


@dataclass(frozen=True)
class HandwrittenQuery:
    """One hand-written query; `line` is its 1-based line in the file (for error messages)."""

    query_id: str
    query: str
    kind: str
    judgments: tuple[Judgment, ...]
    line: int


@dataclass(frozen=True)
class HandwrittenSet:
    source: str
    queries: list[HandwrittenQuery]


def _text_field(entry: dict, name: str, source: str, line: int, prefix: str = "") -> str:
    if name not in entry:
        raise HandwrittenEvalError(source, line, prefix + name, "missing")
    value = entry[name]
    if not isinstance(value, str) or not value.strip():
        raise HandwrittenEvalError(source, line, prefix + name, f"must be a non-empty string, got {value!r}")
    return value


def _parse_judgment(entry: object, source: str, line: int, field: str) -> Judgment:
    if not isinstance(entry, dict):
        raise HandwrittenEvalError(source, line, field, f"expected an object {{sku, title, grade}}, got {entry!r}")
    sku = _text_field(entry, "sku", source, line, f"{field}.")
    title = _text_field(entry, "title", source, line, f"{field}.")
    if "grade" not in entry:
        raise HandwrittenEvalError(source, line, f"{field}.grade", "missing")
    grade = entry["grade"]
    if isinstance(grade, bool) or not isinstance(grade, int) or grade not in RELEVANCE_GRADES:
        raise HandwrittenEvalError(source, line, f"{field}.grade",
                                   f"must be an integer in {list(RELEVANCE_GRADES)}, got {grade!r}")
    return Judgment(sku, title, grade)


def _parse_query(entry: object, source: str, line: int) -> HandwrittenQuery:
    if not isinstance(entry, dict):
        raise HandwrittenEvalError(source, line, None, "expected a JSON object {query_id, query, kind, judgments}, "
                                   f"got {type(entry).__name__}")
    query_id, query, kind = (_text_field(entry, name, source, line) for name in ("query_id", "query", "kind"))
    if "judgments" not in entry:
        raise HandwrittenEvalError(source, line, "judgments", "missing")
    raw = entry["judgments"]
    if not isinstance(raw, list) or not raw:
        raise HandwrittenEvalError(source, line, "judgments", f"must be a non-empty list of {{sku, title, grade}}, "
                                   f"got {raw!r}")
    judgments: list[Judgment] = []
    first: dict[str, int] = {}
    for i, item in enumerate(raw):
        judgment = _parse_judgment(item, source, line, f"judgments[{i}]")
        if judgment.sku in first:
            raise HandwrittenEvalError(source, line, f"judgments[{i}].sku",
                                       f"{judgment.sku!r} is already judged in judgments[{first[judgment.sku]}]")
        first[judgment.sku] = i
        judgments.append(judgment)
    return HandwrittenQuery(query_id, query, kind, tuple(judgments), line)


def load_handwritten_eval(uri: str = "") -> HandwrittenSet:
    """The packaged hand-written set (uri empty) or a user's JSONL (local path or gs:// URI) of the same shape, one
    query per line: {"query_id", "query", "kind", "judgments": [{"sku", "title", "grade"}]}, grade 0-3 (titles not
    listed are grade 0). Raises `HandwrittenEvalError` naming the file, the line and the field."""
    source, entries = storage.jsonl_entries(uri, HANDWRITTEN_EVAL_FILE,
                                            lambda src, line, problem: HandwrittenEvalError(src, line, None, problem))
    queries: list[HandwrittenQuery] = []
    lines: dict[str, int] = {}
    for line, entry in entries:
        query = _parse_query(entry, source, line)
        if query.query_id in lines:
            raise HandwrittenEvalError(source, line, "query_id",
                                       f"{query.query_id!r} is already used on line {lines[query.query_id]}")
        lines[query.query_id] = line
        queries.append(query)
    if not queries:
        raise HandwrittenEvalError(source, None, None, "no queries")
    return HandwrittenSet(source, queries)


def _check_against_catalog(handwritten: HandwrittenSet, by_sku: Mapping[str, dict]) -> None:
    """Every judged sku is in the catalog the gate ranks, under the title the file gives it."""
    for query in handwritten.queries:
        for i, judgment in enumerate(query.judgments):
            record = by_sku.get(judgment.sku)
            if record is None:
                raise HandwrittenEvalError(handwritten.source, query.line, f"judgments[{i}].sku",
                                           f"{judgment.sku!r} is not in the catalog ({len(by_sku)} records)")
            if str(record["title"]) != judgment.title:
                raise HandwrittenEvalError(handwritten.source, query.line, f"judgments[{i}].title",
                                           f"{judgment.title!r}, but the catalog's title for {judgment.sku} is "
                                           f"{record['title']!r}")


def model_document_text(candidates: pa.Table, by_sku: Mapping[str, dict], source: str,
                        ) -> tuple[Callable[[dict], str], bool]:
    """The builder of the text the models read, and whether it includes the description: the variant of
    `retrieval.catalog_document` (with or without description) that wrote every candidate_text of the generated
    split, so hand-written candidates are read exactly as the models' own candidates are."""
    skus = candidates.column("sku").to_pylist()
    texts = candidates.column("candidate_text").to_pylist()
    if not skus:
        raise DataContractError(source, None, None, "no candidates")
    variants = {False, True}  # description
    for row, (sku, text) in enumerate(zip(skus, texts, strict=True)):
        record = by_sku.get(sku)
        if record is None:
            raise DataContractError(source, "sku", row, f"{sku!r} is not in the catalog the gate ranks the "
                                    f"hand-written set over ({len(by_sku)} records)")
        variants = {d for d in variants if text == catalog_document(record, description=d)}
        if not variants:
            raise DataContractError(source, "candidate_text", row, "not the same retrieval.catalog_document(record, "
                                    "description=...) as the other rows: the hand-written candidates cannot be "
                                    "given the text the models read")
    description = min(variants)
    return partial(catalog_document, description=description), description


def handwritten_candidates(queries: Sequence[HandwrittenQuery], index: CatalogIndex, by_sku: Mapping[str, dict],
                           document_text: Callable[[dict], str], pool: int = HANDWRITTEN_POOL) -> list[dict]:
    """RERANK_CANDIDATES rows (plus "kind") per query: BM25's top `pool`, then every judged title BM25 missed
    in BM25 order (retrieval_rank null); relevance = the judged grade, 0 for titles not listed."""
    position = {sku: i for i, sku in enumerate(index.skus)}
    rows = []
    for query in queries:
        scores = index.scores(query.query)
        hits = [sku for sku, _ in index.search(query.query, pool)]
        grades = {judgment.sku: judgment.grade for judgment in query.judgments}
        retrieved = set(hits)
        missed = sorted((sku for sku in grades if sku not in retrieved),
                        key=lambda sku: (-scores[position[sku]], position[sku]))
        for rank, sku in enumerate(hits + missed, start=1):
            rows.append({"query_id": query.query_id, "query": query.query, "kind": query.kind, "sku": sku,
                         "candidate": str(by_sku[sku]["title"]), "candidate_text": document_text(by_sku[sku]),
                         "retrieval_rank": rank if rank <= len(hits) else None,
                         "bm25_score": float(scores[position[sku]]), "relevance": grades.get(sku, 0)})
    return rows


def _metric_slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "unnamed"


def evaluate_handwritten(
    handwritten: HandwrittenSet, catalog: Sequence[dict], document_text: Callable[[dict], str],
    scorers: Mapping[str, PairScorer], k: int = NDCG_K, mrr_threshold: float = DEFAULT_MRR_THRESHOLD,
) -> tuple[dict[str, float], dict]:
    """The `handwritten_` metrics (module docstring) and the per-query material for the report; `scorers` holds
    one `PairScorer` per name in RERANKERS (BM25 comes from the catalog index)."""
    missing = [name for name in RERANKERS if name not in scorers]
    if missing:
        raise ValueError(f"no scorer for {missing}")
    by_sku = {str(record["sku"]): record for record in catalog}
    _check_against_catalog(handwritten, by_sku)
    index = CatalogIndex.from_records(catalog)
    rows = handwritten_candidates(handwritten.queries, index, by_sku, document_text)
    query_ids = [row["query_id"] for row in rows]
    titles = [row["candidate"] for row in rows]
    relevance = np.asarray([row["relevance"] for row in rows], dtype=np.float64)

    # the pools, then each query against the common candidates its pool lacks: every pair scored once per model
    common = [sku for sku, _ in Counter(row["sku"] for row in rows).most_common(BLIND_CHECK_CANDIDATES)]
    pairs = [(row["query_id"], row["sku"]) for row in rows]
    pooled = set(pairs)
    pairs += [(query.query_id, sku) for query in handwritten.queries for sku in common
              if (query.query_id, sku) not in pooled]
    text = {query.query_id: query.query for query in handwritten.queries}
    texts = {sku: document_text(by_sku[sku]) for sku in dict.fromkeys(sku for _, sku in pairs)}
    bm25 = {query.query_id: index.scores(query.query) for query in handwritten.queries}
    sku_position = {sku: i for i, sku in enumerate(index.skus)}
    scores = {"bm25": np.asarray([bm25[q][sku_position[sku]] for q, sku in pairs], dtype=np.float64)}
    for name in RERANKERS:
        values = np.asarray(scorers[name]([text[q] for q, _ in pairs], [texts[sku] for _, sku in pairs]),
                            dtype=np.float64)
        if values.shape != (len(pairs),):
            raise ValueError(f"{name}: {values.shape} scores for {len(pairs)} pairs")
        scores[name] = values
    at = {pair: i for i, pair in enumerate(pairs)}
    matrix = np.asarray([[at[(query.query_id, sku)] for sku in common] for query in handwritten.queries])

    h = HANDWRITTEN
    metrics: dict[str, float] = {
        f"{h}queries": float(len(handwritten.queries)), f"{h}pairs": float(len(rows)),
        f"{h}judged_added": float(sum(row["retrieval_rank"] is None for row in rows)),
        f"{h}bm25_pool": float(HANDWRITTEN_POOL), f"{h}blind_check_candidates": float(len(common)),
        f"{h}blind_check_extra_pairs": float(len(pairs) - len(rows)),
    }
    per_query: dict[str, list[QueryRanking]] = {}
    top1: dict[str, dict[str, str]] = {}
    repeated: dict[str, str | None] = {}
    for name in MODELS:
        pool_scores = scores[name][: len(rows)]
        per_query[name] = per_query_metrics(query_ids, relevance, pool_scores, k, mrr_threshold)
        means = mean_ranking_metrics(per_query[name])
        metrics[f"{h}{name}_ndcg_at_{k}"] = means["ndcg"]
        metrics[f"{h}{name}_mrr"] = means["mrr"]
        top1[name] = top1_per_query(query_ids, titles, pool_scores)
        metrics[f"{h}{name}_top1_repeat_share"], repeated[name] = top1_repeat(list(top1[name].values()))
        metrics[f"{h}{name}_query_interaction_share"] = query_interaction_share(scores[name][matrix])
    metrics[f"{h}queries_without_relevant"] = mean_ranking_metrics(per_query["bm25"])["queries_without_relevant"]
    ndcg = {name: metrics[f"{h}{name}_ndcg_at_{k}"] for name in MODELS}
    metrics[f"{h}ndcg_retained"] = retained(ndcg["student"], ndcg["teacher"])
    metrics[f"{h}student_vs_bm25"] = ndcg["student"] - ndcg["bm25"]
    metrics[f"{h}teacher_vs_bm25"] = ndcg["teacher"] - ndcg["bm25"]
    metrics[f"{h}int8_drop"] = ndcg["student"] - ndcg["student_int8"]

    kinds: dict[str, list[str]] = {}
    for query in handwritten.queries:
        kinds.setdefault(_metric_slug(query.kind), []).append(query.query_id)
    for kind, ids in kinds.items():
        metrics[f"{h}kind_{kind}_queries"] = float(len(ids))
        in_kind = set(ids)
        for name in KIND_MODELS:
            members = [ranking for ranking in per_query[name] if ranking.query_id in in_kind]
            metrics[f"{h}kind_{kind}_{name}_ndcg_at_{k}"] = mean_ranking_metrics(members)["ndcg"]
    return metrics, {"source": handwritten.source, "per_query": per_query, "query_text": text, "top1": top1,
                     "repeated": repeated, "kinds": list(kinds)}


def evaluate_reranker(
    eval_uri: str, teacher_dir: str, student_dir: str, int8_dir: str, catalog: Sequence[dict],
    handwritten_eval_uri: str = "", k: int = NDCG_K,
    latency_queries: int = LATENCY_QUERIES, latency_candidates: int = LATENCY_CANDIDATES,
    mrr_threshold: float = DEFAULT_MRR_THRESHOLD, max_length: int = DEFAULT_MAX_LENGTH,
) -> tuple[dict[str, float | None], dict]:
    """All metrics (see module docstring) on the generated split (eval_uri) and the hand-written set (packaged
    when handwritten_eval_uri is empty, ranked over `catalog`: the catalog the split was built from), and the
    per-query material for the report; every model reads at most `max_length` tokens of query + candidate text."""
    # both sets checked before any model loads
    by_sku = {str(record["sku"]): record for record in catalog}
    handwritten = load_handwritten_eval(handwritten_eval_uri)
    _check_against_catalog(handwritten, by_sku)
    table, quarantined = read_judged_candidates(eval_uri)
    document_text, with_description = model_document_text(table, by_sku, eval_uri)
    query_ids = table.column("query_id").to_pylist()
    queries = table.column("query").to_pylist()
    texts = table.column("candidate_text").to_pylist()
    relevance = np.asarray(table.column("relevance").to_pylist(), dtype=np.float64)
    teacher = CrossEncoderScorer(teacher_dir, max_length)
    student = CrossEncoderScorer(student_dir, max_length)
    int8 = OnnxCrossEncoder(str(Path(int8_dir) / INT8_FILENAME), int8_dir, max_length, threads=LATENCY_THREADS)
    scores = {
        "bm25": fill_missing_bm25(query_ids, queries, texts, table.column("bm25_score").to_pylist()),
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
    metrics["candidate_text_has_description"] = float(with_description)
    titles = table.column("candidate").to_pylist()
    top1 = {name: top1_per_query(query_ids, titles, values) for name, values in scores.items()}

    handwritten_metrics, handwritten_material = evaluate_handwritten(
        handwritten, catalog, document_text,
        {"teacher": lambda q, d: teacher.score(q, d, progress="teacher (hand-written)"),
         "student": lambda q, d: student.score(q, d, progress="student (hand-written)"),
         "student_int8": int8.score},
        k, mrr_threshold,
    )
    metrics.update(handwritten_metrics)

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
    metrics["teacher_size_mb"] = weights_size_mb(teacher_dir)
    metrics["student_size_mb"] = weights_size_mb(student_dir)
    metrics["student_int8_size_mb"] = path_size_mb(str(Path(int8_dir) / INT8_FILENAME))
    metrics["int8_size_ratio"] = quant_report.get("size_ratio")
    generated = {"per_query": per_query, "query_text": dict(zip(query_ids, queries, strict=True)), "top1": top1}
    return metrics, {"generated": generated, "handwritten": handwritten_material}


def run_reranker_gate(
    eval_uri: str, teacher_dir: str, student_dir: str, int8_dir: str, report_uri: str, event_uri: str,
    gates_uri: str = "", student_name: str = "reranker-student", teacher_name: str = "reranker-teacher",
    latency_queries: int = LATENCY_QUERIES, max_length: int = DEFAULT_MAX_LENGTH, *, catalog: Sequence[dict],
    handwritten_eval_uri: str = "",
) -> GateOutcome:
    """Measure on the generated split and the hand-written set (`evaluate_reranker`), apply the gates (packaged
    reranker gates when gates_uri is empty), write report and event."""
    gates = load_gates(gates_uri or packaged_gates_path("reranker"))
    metrics, plots = evaluate_reranker(eval_uri, teacher_dir, student_dir, int8_dir, catalog,
                                       handwritten_eval_uri=handwritten_eval_uri, latency_queries=latency_queries,
                                       max_length=max_length)
    decision = evaluate_gates(gates, metrics)
    event = distilled_model_eval(student_name, teacher_name, metrics, decision, gates_source=gates_uri or "packaged")
    write_event(event, event_uri)
    storage.write_text(report_uri, _report_html(metrics, plots, decision, student_name, teacher_name))
    return GateOutcome(metrics, decision, event)


def _worst_queries(material: dict, n: int = WORST_QUERIES) -> list[list]:
    """Rows (query id, query, NDCG loss vs teacher, BM25, teacher, student, student's top 1) for the `n` queries
    where the student's NDCG@k falls furthest below the teacher's."""
    ndcg = {name: {q.query_id: q.ndcg for q in rankings} for name, rankings in material["per_query"].items()}
    losses = sorted(((ndcg["teacher"][query_id] - value, query_id) for query_id, value in ndcg["student"].items()
                     if not np.isnan(value)), key=lambda item: (-item[0], item[1]))[:n]
    return [[query_id, material["query_text"][query_id], loss, ndcg["bm25"][query_id], ndcg["teacher"][query_id],
             ndcg["student"][query_id], material["top1"]["student"][query_id]] for loss, query_id in losses]


def _report_html(metrics, plots, decision, student_name: str, teacher_name: str) -> str:
    k = int(metrics["ndcg_k"])
    h = HANDWRITTEN
    quality_rows = [[_DISPLAY[name], metrics[f"{name}_ndcg_at_{k}"], metrics[f"{name}_mrr"],
                     metrics[f"{h}{name}_ndcg_at_{k}"], metrics[f"{h}{name}_mrr"]] for name in MODELS]
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
    handwritten = plots["handwritten"]
    kind_rows = [[kind, metrics[f"{h}kind_{kind}_queries"],
                  *(metrics[f"{h}kind_{kind}_{name}_ndcg_at_{k}"] for name in KIND_MODELS)]
                 for kind in handwritten["kinds"]]
    blind_rows = []
    for name in MODELS:
        share = metrics[f"{h}{name}_top1_repeat_share"]
        most = f"{handwritten['repeated'][name]} ({share * metrics[f'{h}queries']:.0f} of {metrics[f'{h}queries']:.0f})"
        blind_rows.append([_DISPLAY[name], share, most, metrics[f"{h}{name}_query_interaction_share"]])
    worst_columns = ["query id", "query", f"NDCG@{k} loss", "BM25", "teacher", "student", "student's top 1"]
    sections = [
        r.KeyValueSection("Run", {"student": student_name, "teacher": teacher_name,
                                  "held-out queries": metrics["eval_queries"],
                                  "judged (query, candidate) pairs": metrics["eval_pairs"],
                                  "rows quarantined": metrics["eval_quarantined_rows"],
                                  "queries without a relevant candidate (left out of means)":
                                      metrics["eval_queries_without_relevant"],
                                  "hand-written set": handwritten["source"],
                                  "hand-written queries": metrics[f"{h}queries"],
                                  "hand-written (query, candidate) pairs: BM25 top "
                                  f"{metrics[f'{h}bm25_pool']:.0f} + judged titles BM25 missed":
                                      metrics[f"{h}pairs"],
                                  "judged titles BM25 missed (appended)": metrics[f"{h}judged_added"],
                                  "hand-written queries without a relevant candidate (left out of means)":
                                      metrics[f"{h}queries_without_relevant"],
                                  "candidate text the models read": "catalog_document with description"
                                  if metrics["candidate_text_has_description"] else
                                  "catalog_document without description"}),
        r.TableSection(f"Ranking quality: generated held-out split and hand-written set (NDCG@{k}, MRR)",
                       ["model", f"generated NDCG@{k}", "generated MRR", f"hand-written NDCG@{k}",
                        "hand-written MRR"], quality_rows),
        r.TableSection(f"Hand-written set per query kind (NDCG@{k})",
                       ["kind", "queries", *(_DISPLAY[name] for name in KIND_MODELS)], kind_rows),
        r.TableSection("Query-blind check (hand-written set)",
                       ["model", "top-1 repeat share", "most repeated top 1", "query interaction share"],
                       blind_rows),
        r.ParagraphSection(
            "How to read the query-blind check",
            "top-1 repeat share: the largest share of hand-written queries whose reranked top 1 is the same title "
            "(a model that reads the query spreads its top 1 over the titles the queries ask for).\n\n"
            "query interaction share: every hand-written query is scored against the "
            f"{metrics[f'{h}blind_check_candidates']:.0f} candidates most frequent in the pools; of the score "
            "variance within a query, the share that the candidate alone (its mean over queries) does not explain. "
            "0 for a model that scores a candidate the same whatever the query, near 1 for one whose scores "
            "depend on the query."),
        r.FigureSection(f"NDCG@{k} vs CPU latency", tradeoff,
                        caption="one thread per model; a request is one query with its candidates"),
        r.TableSection("CPU latency per query (one thread) and size", ["model", "p50 ms", "p95 ms", "size MiB"],
                       speed_rows),
        r.TableSection(f"Queries where the student loses most NDCG@{k} against the teacher: generated held-out",
                       worst_columns, _worst_queries(plots["generated"])),
        r.TableSection(f"Queries where the student loses most NDCG@{k} against the teacher: hand-written",
                       worst_columns, _worst_queries(handwritten)),
    ]
    return r.render_html_report(f"Reranker distillation: {student_name}", decision, sections)
