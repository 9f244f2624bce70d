"""The reranker pipeline's stages, one function per component: read inputs by URI, validate them against their
contract, do the work, write outputs and a quarantine table, and return the metrics the component logs.
Each component in components/reranker/<stage>/ calls exactly one of these.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError, ValidatedTable, concat_quarantine, validate_table
from mangadistill.core.publish import ModelCard, PublishedVersion, encoder_layout, publish_version
from mangadistill.core.stage_io import loggable, quarantine_metrics, read_valid
from mangadistill.reranker.contracts import (
    RERANK_CANDIDATES,
    RERANK_QUERIES,
    RERANK_TEACHER_SCORES,
    check_query_coverage,
)

if TYPE_CHECKING:
    from mangadistill.core.gates import GateOutcome
    from mangadistill.reranker.cross_encoder import RerankerTrainConfig


def _within_top_k(candidates: pa.Table, top_k: int) -> pa.Table:
    """Rows with retrieval_rank <= top_k, plus judged rows BM25 missed (rank null); all rows when top_k is 0."""
    if top_k <= 0:
        return candidates
    ranks = candidates.column("retrieval_rank").to_pylist()
    keep = [rank is None or rank <= top_k for rank in ranks]
    return candidates.filter(pa.array(keep, type=pa.bool_()))


def run_reranker_teacher_labeling(
    candidates_uri: str, teacher_scores_uri: str, quarantine_uri: str, teacher_model: str, queries_uri: str = "",
    top_k: int = 0, batch_size: int = 32, max_length: int = 128, on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """RERANK_CANDIDATES (+ optional RERANK_QUERIES) -> RERANK_TEACHER_SCORES + QUARANTINE.

    The cross-encoder teacher scores each (query, candidate_text) pair, s = sigmoid(logit) in [0, 1]; pairs are
    tokenized once, sorted by length and batched. top_k > 0 scores only each query's first top_k candidates in
    retrieval order (counted as pairs_beyond_top_k). Quarantined with reasons: malformed or duplicate
    (query_id, sku) candidate rows, queries (from queries_uri) with no candidates, and pairs the teacher scored
    NaN or outside [0, 1]; more than 20% bad rows, or on_bad_rows="fail", raises DataContractError instead.
    """
    from mangadistill.core.models import resolve_model
    from mangadistill.reranker.cross_encoder import CrossEncoderScorer, teacher_score_table

    validated = read_valid(candidates_uri, RERANK_CANDIDATES, on_bad_rows, None)
    quarantines = [validated.quarantine]
    if queries_uri:
        queries = read_valid(queries_uri, RERANK_QUERIES, on_bad_rows, None)
        queries_checked = check_query_coverage(queries.table, validated.table, queries_uri)
        if queries_checked.quarantine.num_rows and on_bad_rows == "fail":
            first = queries_checked.quarantine.to_pylist()[0]
            raise DataContractError(queries_uri, "query_id", first["row"], f"query {first['value']!r}: no candidates")
        quarantines += [queries.quarantine, queries_checked.quarantine]
    candidates = _within_top_k(validated.table, top_k)
    started = time.perf_counter()
    scorer = CrossEncoderScorer(resolve_model(teacher_model), max_length)
    scored = teacher_score_table(scorer, candidates, batch_size)
    seconds = time.perf_counter() - started
    checked = validate_table(scored, RERANK_TEACHER_SCORES, source=f"teacher {teacher_model} on {candidates_uri}",
                             on_bad_rows=on_bad_rows)
    quarantines.append(checked.quarantine)
    storage.write_table(checked.table, teacher_scores_uri)
    quarantine = concat_quarantine(quarantines)
    storage.write_table(quarantine, quarantine_uri)
    teacher_scores = np.asarray(checked.table.column("teacher_score").to_pylist(), dtype=np.float64)
    summary = {
        "pairs_scored": checked.table.num_rows, "queries": len(set(checked.table.column("query_id").to_pylist())),
        "pairs_beyond_top_k": validated.table.num_rows - candidates.num_rows,
        "teacher_score_mean": float(teacher_scores.mean()) if teacher_scores.size else float("nan"),
        "teacher_seconds": seconds, "pairs_per_second": candidates.num_rows / seconds if seconds else float("nan"),
    }
    return loggable({**summary, **quarantine_metrics(ValidatedTable(checked.table, quarantine))})


def _merge_pairs(scored: list[dict], labelled: list[dict]) -> list[dict]:
    """Teacher-scored rows and judged rows as one list; a (query_id, sku) in both gets both fields."""
    merged = {(row["query_id"], row["sku"]): dict(row) for row in scored}
    for row in labelled:
        key = (row["query_id"], row["sku"])
        if key in merged:
            merged[key]["relevance"] = row["relevance"]
        else:
            merged[key] = {**row, "teacher_score": None}
    return list(merged.values())


def run_reranker_training(
    teacher_scores_uri: str, student_model: str, output_dir: str, config: RerankerTrainConfig, labelled_uri: str = "",
    labelled_per_query: int = 0, quarantine_uri: str = "", checkpoint_dir: str = "", on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """RERANK_TEACHER_SCORES (+ judged RERANK_CANDIDATES) -> a one-logit cross-encoder student folder.

    loss = α·BCE(s, relevance/3) + (1−α)·(s − t)² per row (or MarginMSE, config.distill_loss), s = sigmoid(z):
    `cross_encoder.train_cross_encoder` with config a `RerankerTrainConfig`. Teacher-scored rows carry t (and a
    relevance where known); labelled_uri adds judged pairs for the supervised term (labelled_per_query > 0:
    that many per query, every grade represented, `cross_encoder.sample_candidates`). Rows that cannot
    contribute at this α (no relevance at α = 1, no teacher score at α = 0) are left out and counted as
    pairs_unused_at_alpha. Bad rows (NaN or out-of-range scores, duplicates) are quarantined with reasons.
    """
    from mangadistill.reranker.cross_encoder import sample_candidates, train_cross_encoder

    scored = read_valid(teacher_scores_uri, RERANK_TEACHER_SCORES, on_bad_rows, None)
    quarantines = [scored.quarantine]
    labelled_rows: list[dict] = []
    if labelled_uri:
        labelled = read_valid(labelled_uri, RERANK_CANDIDATES, on_bad_rows, None)
        quarantines.append(labelled.quarantine)
        table = labelled.table.filter(labelled.table.column("relevance").is_valid())
        if labelled_per_query > 0:
            table = sample_candidates(table, labelled_per_query, config.seed)
        labelled_rows = table.to_pylist()
    quarantine = concat_quarantine(quarantines)
    if quarantine_uri:
        storage.write_table(quarantine, quarantine_uri)
    pairs = _merge_pairs(scored.table.to_pylist(), labelled_rows)
    useful = [row for row in pairs
              if (row.get("relevance") is not None and config.alpha > 0)
              or (row.get("teacher_score") is not None and config.alpha < 1)]
    if not useful:
        raise ValueError(f"{teacher_scores_uri}: no pair can train the student at alpha={config.alpha} "
                         f"(alpha 1 needs judged pairs: pass labelled_uri)")
    result = train_cross_encoder(useful, student_model, output_dir, config, checkpoint_dir=checkpoint_dir or None)
    return loggable({
        "train_pairs": len(useful), "train_queries": len({row["query_id"] for row in useful}),
        "labelled_pairs": sum(row.get("relevance") is not None for row in useful),
        "teacher_scored_pairs": sum(row.get("teacher_score") is not None for row in useful),
        "pairs_unused_at_alpha": len(pairs) - len(useful), "final_loss": result.epoch_losses[-1],
        "train_seconds": result.train_seconds, "parameters": result.num_parameters,
        "resumed_from_epoch": result.resumed_from_epoch,
        **quarantine_metrics(ValidatedTable(scored.table, quarantine)),
    })


def bootstrap_reranker_teacher(
    train_uri: str, base_model: str, output_dir: str, config: RerankerTrainConfig | None = None,
    per_query: int | None = 4,
) -> dict[str, float]:
    """Fine-tune the demo cross-encoder teacher on the judged train split (RERANK_CANDIDATES, alpha = 1).

    For the demo only: a production team passes its own cross-encoder instead. Default: per_query=4 judged
    candidates per train query (every grade represented), one epoch, batch 16, learning rate 5e-5, 64 tokens;
    on the 200 sample train queries that is 800 pairs, 50 steps (bench/results/reranker.json: NDCG@10 0.767
    vs BM25 0.698 on 20 held-out queries; 288 s on 2 shared cores at load 3, 1,050 s at load 9).
    """
    from mangadistill.reranker.cross_encoder import RerankerTrainConfig, bootstrap_teacher

    config = config or RerankerTrainConfig(epochs=1, batch_size=16, learning_rate=5e-5, max_length=64)

    validated = read_valid(train_uri, RERANK_CANDIDATES, "quarantine", None)
    table = validated.table.filter(validated.table.column("relevance").is_valid())
    result = bootstrap_teacher(table, output_dir, base_model, config, per_query)
    trained_pairs = json.loads(Path(output_dir, "training_report.json").read_text())["pairs"]
    Path(output_dir, "teacher_card.json").write_text(json.dumps({
        "role": "reranker teacher cross-encoder (demo bootstrap)", "base_model": base_model,
        "train_uri": train_uri, "judged_pairs": table.num_rows, "per_query": per_query, "train_pairs": trained_pairs,
        **quarantine_metrics(validated),
    }, indent=2))
    return {"train_pairs": float(trained_pairs), "final_loss": result.epoch_losses[-1],
            "train_seconds": result.train_seconds}


def run_reranker_quantization(model_dir: str, output_dir: str, eval_uri: str, max_length: int = 128,
                              sample_pairs: int = 64) -> dict[str, float]:
    """A one-logit cross-encoder folder -> its int8 ONNX folder (`cross_encoder.quantize_cross_encoder`).

    Metrics: sizes (MiB), size_ratio = fp32 ONNX / int8 ONNX, and |fp32 score − int8 score| (max, mean) on the
    first `sample_pairs` pairs of eval_uri (RERANK_CANDIDATES)."""
    from mangadistill.reranker.cross_encoder import quantize_cross_encoder

    table = read_valid(eval_uri, RERANK_CANDIDATES, "quarantine", None).table.slice(0, sample_pairs)
    pairs = list(zip(table.column("query").to_pylist(), table.column("candidate_text").to_pylist(), strict=True))
    return loggable(quantize_cross_encoder(model_dir, output_dir, max_length=max_length, sample_pairs=pairs))


def run_reranker_gate_check(
    eval_uri: str, teacher_model: str, student_dir: str, int8_dir: str, report_uri: str, event_uri: str,
    gates_uri: str = "", student_name: str = "reranker-student", teacher_name: str = "reranker-teacher",
    latency_queries: int = 10, max_length: int = 128, handwritten_eval_uri: str = "",
    catalog: list[dict] | None = None, event_copy_uri: str = "",
) -> GateOutcome:
    """Judged RERANK_CANDIDATES + teacher, student and int8 student -> report and `distilled_model_eval` event
    (and a copy of the event at event_copy_uri when given: the exit handler reads it).

    NDCG@10 and MRR of teacher, student, int8 student and BM25 on the held-out judged queries and on the
    hand-written set (the packaged one when handwritten_eval_uri is empty; BM25 top 50 over `catalog`, default the
    packaged sample catalog the demo data is built from), the query-blind checks, CPU latency and sizes, then the
    gates (`gate.run_reranker_gate`; the packaged reranker gates when gates_uri is empty).
    """
    from mangadistill.core.events import copy_event
    from mangadistill.core.models import resolve_model
    from mangadistill.reranker.gate import run_reranker_gate

    if catalog is None:
        from mangadistill.sample_data.catalog import catalog_records

        catalog = catalog_records()
    outcome = run_reranker_gate(
        eval_uri, resolve_model(teacher_model), student_dir, int8_dir, report_uri, event_uri, gates_uri=gates_uri,
        student_name=student_name, teacher_name=teacher_name, latency_queries=latency_queries, max_length=max_length,
        catalog=catalog, handwritten_eval_uri=handwritten_eval_uri,
    )
    copy_event(event_uri, event_copy_uri)
    return outcome


RERANKER_CARD = ModelCard(
    task="reranker", pipeline_tag="text-ranking",
    intended_use="Reranking the catalog candidates a first-stage retriever (BM25) returns for a shopper's query, "
                 "on CPU: one score per (query, candidate text) pair, sigmoid in [0, 1], higher is more relevant. "
                 "Candidates are read as `retrieval.catalog_document` writes them.",
    how_to_load="```python\nfrom sentence_transformers import CrossEncoder\nreranker = CrossEncoder(\"VERSION_FOLDER\")"
                "\nscores = reranker.predict([(query, candidate_text), ...])\n\nimport onnxruntime  # the int8 CPU "
                "variant\nsession = onnxruntime.InferenceSession(\"VERSION_FOLDER/onnx/model_qint8_dynamic.onnx\")"
                "\n```",
    limitations="Judged against the packaged catalog; the hand-written set's per-kind table in the report shows "
                "which kinds of query it serves worst.",
)


def run_reranker_publish(student_dir: str, int8_dir: str, report_path: str, event_path: str, models_root: str,
                         model_name: str, run_id: str) -> PublishedVersion:
    """The promoted cross-encoder student as `<models_root>/<model_name>/<run_id>/`
    (`core.publish.publish_version`): the CrossEncoder folder at the top, onnx/model_qint8_dynamic.onnx."""
    return publish_version(models_root, model_name, run_id, encoder_layout(student_dir, int8_dir), event_path,
                           report_path, RERANKER_CARD)
