"""One function per pipeline stage: read inputs by URI (local path or gs://), validate them against their
contract, do the work, write outputs and a quarantine table, and return the metrics the component logs.

Each KFP component in components/<stage>/ is a thin adapter that calls exactly one of these.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from mangadistill import storage
from mangadistill.ensemble import EnsembleConfig, ensemble_soft_labels
from mangadistill.events import json_safe
from mangadistill.intents import INTENTS
from mangadistill.labeling import LabelingConfig, label_messages
from mangadistill.schemas import (
    LABELLED_MESSAGES,
    MEMBER_VOTES,
    MESSAGES,
    MODEL_ANSWERS,
    RERANK_CANDIDATES,
    RERANK_QUERIES,
    RERANK_TEACHER_SCORES,
    REVIEW_KEY,
    REVIEW_PACKET,
    SOFT_LABELS,
    TEACHER_RESPONSES,
    DataContractError,
    ValidatedTable,
    check_query_coverage,
    concat_quarantine,
    validate_table,
)
from mangadistill.training import TrainConfig, train_classifier

log = logging.getLogger(__name__)


def _read_valid(uri: str, schema, on_bad_rows: str, quarantine_uri: str | None):
    """Read and validate a table; write its quarantine (possibly empty) when a URI is given."""
    validated = validate_table(storage.read_table(uri), schema, source=uri, on_bad_rows=on_bad_rows)
    if quarantine_uri:
        storage.write_table(validated.quarantine, quarantine_uri)
    if validated.quarantine.num_rows:
        log.warning("%s: %d rows quarantined: %s", uri, validated.quarantine.num_rows, validated.reason_counts)
    return validated


def loggable(values: dict) -> dict[str, float]:
    """The finite numbers of a summary, as floats: what a KFP Metrics artifact can hold (no NaN, no None)."""
    return {name: float(value) for name, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)}


def _quarantine_metrics(validated) -> dict[str, float]:
    metrics = {"quarantined_rows": float(validated.quarantine.num_rows)}
    metrics.update({f"quarantined_{reason.replace(' ', '_')}": float(n)
                    for reason, n in validated.reason_counts.items()})
    return metrics


def run_teacher_labeling(
    messages_uri: str, votes_uri: str, quarantine_uri: str, config: LabelingConfig,
    on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """MESSAGES (extra columns ignored) -> MEMBER_VOTES + QUARANTINE."""
    validated = _read_valid(messages_uri, MESSAGES, on_bad_rows, quarantine_uri)
    votes, summary = label_messages(validated.table, config)
    storage.write_table(votes, votes_uri)
    return loggable({**summary, **_quarantine_metrics(validated)})


def run_soft_label_ensemble(
    votes_uri: str, soft_labels_uri: str, report_uri: str, quarantine_uri: str, config: EnsembleConfig,
    on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """MEMBER_VOTES -> SOFT_LABELS + a JSON report (agreement, entropy, examples) + QUARANTINE."""
    validated = _read_valid(votes_uri, MEMBER_VOTES, on_bad_rows, quarantine_uri)
    table, report = ensemble_soft_labels(validated.table, config)
    storage.write_table(table, soft_labels_uri)
    report = {"config": asdict(config), **report, **_quarantine_metrics(validated)}
    storage.write_text(report_uri, json.dumps(json_safe(report), indent=2, allow_nan=False))
    return loggable(report)


def run_distillation_training(
    soft_labels_uri: str, student_model: str, output_dir: str, config: TrainConfig,
    quarantine_uri: str = "", checkpoint_dir: str = "", on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """SOFT_LABELS -> a student classifier folder trained on β·CE(hard) + (1−β)·T²·KL(soft ‖ student)."""
    from mangadistill.models import resolve_model

    validated = _read_valid(soft_labels_uri, SOFT_LABELS, on_bad_rows, quarantine_uri)
    table = validated.table
    soft = np.asarray(table.column("soft_label").to_pylist(), dtype=np.float32)
    result = train_classifier(
        resolve_model(student_model), table.column("text").to_pylist(), table.column("hard_label").to_pylist(),
        INTENTS, output_dir, config, soft_labels=soft, checkpoint_dir=checkpoint_dir or None,
    )
    return loggable({
        "train_rows": table.num_rows, "final_loss": result.epoch_losses[-1], "train_seconds": result.train_seconds,
        "parameters": result.num_parameters, "resumed_from_epoch": result.resumed_from_epoch,
        **_quarantine_metrics(validated),
    })


def bootstrap_intent_teacher(
    labelled_uri: str, base_model: str, output_dir: str, config: TrainConfig | None = None,
) -> dict[str, float]:
    """Fine-tune the teacher classifier on a LABELLED_MESSAGES split (hard labels only).

    For the demo only: a production team passes its own fine-tuned classifier instead.
    """
    from mangadistill.models import resolve_model

    config = config or TrainConfig(beta=1.0, epochs=2, freeze_layers=8, learning_rate=1e-4, batch_size=16)
    validated = _read_valid(labelled_uri, LABELLED_MESSAGES, "quarantine", None)
    table = validated.table
    result = train_classifier(
        resolve_model(base_model), table.column("text").to_pylist(), table.column("label").to_pylist(),
        INTENTS, output_dir, config,
    )
    Path(output_dir, "teacher_card.json").write_text(json.dumps({
        "role": "intent teacher classifier (demo bootstrap)", "base_model": base_model,
        "labelled_uri": labelled_uri, "train_rows": table.num_rows, **_quarantine_metrics(validated),
    }, indent=2))
    return {"train_rows": float(table.num_rows), "final_loss": result.epoch_losses[-1],
            "train_seconds": result.train_seconds}


def run_quantization(model_dir: str, output_dir: str, eval_uri: str, max_length: int = 64) -> dict[str, float]:
    """A classifier folder -> its int8 ONNX folder; size, latency and accuracy before and after."""
    from mangadistill.quantization import quantize_classifier

    table = _read_valid(eval_uri, LABELLED_MESSAGES, "quarantine", None).table
    report = quantize_classifier(model_dir, output_dir, table.column("text").to_pylist(),
                                 table.column("label").to_pylist(), max_length=max_length)
    return loggable(report)


def run_intent_gate_check(
    eval_uri: str, eval_soft_labels_uri: str, eval_votes_uri: str, student_dir: str, baseline_dir: str, int8_dir: str,
    teacher_model: str, report_uri: str, event_uri: str, gates_uri: str = "",
    student_name: str = "intent-student", teacher_name: str = "intent-teacher-ensemble",
):
    """Evaluate on the human-labelled split, apply the gates, write the HTML report and the event."""
    from mangadistill.intent_gate import run_intent_gate
    from mangadistill.models import resolve_model

    return run_intent_gate(
        eval_uri, eval_soft_labels_uri, eval_votes_uri, student_dir, baseline_dir, int8_dir,
        resolve_model(teacher_model),
        report_uri, event_uri, gates_uri=gates_uri, student_name=student_name, teacher_name=teacher_name,
    )


# --- Reranker (Scenario 2) --------------------------------------------------------------------------------

def _write_empty(schema, uri: str) -> None:
    """An output a task does not produce still exists (a cluster launcher uploads every output): 0 rows."""
    storage.write_table(schema.empty_table(), uri)


def _within_top_k(candidates, top_k: int):
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
    from mangadistill.cross_encoder import CrossEncoderScorer, teacher_score_table
    from mangadistill.models import resolve_model

    validated = _read_valid(candidates_uri, RERANK_CANDIDATES, on_bad_rows, None)
    quarantines = [validated.quarantine]
    if queries_uri:
        queries = _read_valid(queries_uri, RERANK_QUERIES, on_bad_rows, None)
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
    return loggable({**summary, **_quarantine_metrics(ValidatedTable(checked.table, quarantine))})


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
    teacher_scores_uri: str, student_model: str, output_dir: str, config, labelled_uri: str = "",
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
    from mangadistill.cross_encoder import sample_candidates, train_cross_encoder

    scored = _read_valid(teacher_scores_uri, RERANK_TEACHER_SCORES, on_bad_rows, None)
    quarantines = [scored.quarantine]
    labelled_rows: list[dict] = []
    if labelled_uri:
        labelled = _read_valid(labelled_uri, RERANK_CANDIDATES, on_bad_rows, None)
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
        **_quarantine_metrics(ValidatedTable(scored.table, quarantine)),
    })


def bootstrap_reranker_teacher(
    train_uri: str, base_model: str, output_dir: str, config=None, per_query: int | None = 4,
) -> dict[str, float]:
    """Fine-tune the demo cross-encoder teacher on the judged train split (RERANK_CANDIDATES, alpha = 1).

    For the demo only: a production team passes its own cross-encoder instead. Default: per_query=4 judged
    candidates per train query (every grade represented), one epoch, batch 16, learning rate 5e-5, 64 tokens;
    on the 200 sample train queries that is 800 pairs, 50 steps (bench/results/reranker.json: NDCG@10 0.767
    vs BM25 0.698 on 20 held-out queries; 288 s on 2 shared cores at load 3, 1,050 s at load 9).
    """
    from mangadistill.cross_encoder import RerankerTrainConfig, bootstrap_teacher

    config = config or RerankerTrainConfig(epochs=1, batch_size=16, learning_rate=5e-5, max_length=64)

    validated = _read_valid(train_uri, RERANK_CANDIDATES, "quarantine", None)
    table = validated.table.filter(validated.table.column("relevance").is_valid())
    result = bootstrap_teacher(table, output_dir, base_model, config, per_query)
    trained_pairs = json.loads(Path(output_dir, "training_report.json").read_text())["pairs"]
    Path(output_dir, "teacher_card.json").write_text(json.dumps({
        "role": "reranker teacher cross-encoder (demo bootstrap)", "base_model": base_model,
        "train_uri": train_uri, "judged_pairs": table.num_rows, "per_query": per_query, "train_pairs": trained_pairs,
        **_quarantine_metrics(validated),
    }, indent=2))
    return {"train_pairs": float(trained_pairs), "final_loss": result.epoch_losses[-1],
            "train_seconds": result.train_seconds}


def run_reranker_quantization(model_dir: str, output_dir: str, eval_uri: str, max_length: int = 128,
                              sample_pairs: int = 64) -> dict[str, float]:
    """A one-logit cross-encoder folder -> its int8 ONNX folder (`cross_encoder.quantize_cross_encoder`); size
    ratio and the fp32-vs-int8 score difference on the first `sample_pairs` eval pairs."""
    from mangadistill.cross_encoder import quantize_cross_encoder

    table = _read_valid(eval_uri, RERANK_CANDIDATES, "quarantine", None).table.slice(0, sample_pairs)
    pairs = list(zip(table.column("query").to_pylist(), table.column("candidate_text").to_pylist(), strict=True))
    return loggable(quantize_cross_encoder(model_dir, output_dir, max_length=max_length, sample_pairs=pairs))


def run_reranker_gate_check(
    eval_uri: str, teacher_model: str, student_dir: str, int8_dir: str, report_uri: str, event_uri: str,
    gates_uri: str = "", student_name: str = "reranker-student", teacher_name: str = "reranker-teacher",
    latency_queries: int = 10, max_length: int = 128,
):
    """NDCG@10/MRR of teacher, student, int8 student and BM25 on the held-out judged queries, CPU latency,
    the gates (`reranker_gate.run_reranker_gate`), the HTML report and the event."""
    from mangadistill.models import resolve_model
    from mangadistill.reranker_gate import run_reranker_gate

    return run_reranker_gate(
        eval_uri, resolve_model(teacher_model), student_dir, int8_dir, report_uri, event_uri, gates_uri=gates_uri,
        student_name=student_name, teacher_name=teacher_name, latency_queries=latency_queries, max_length=max_length,
    )


# --- One entry point per stage, dispatching on the pipeline's task (what each component calls) -------------

TASKS = ("intent", "reranker", "response")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _need(task: str, **uris: str) -> None:
    missing = [name for name, uri in uris.items() if not uri]
    if missing:
        raise ValueError(f"task {task!r} needs the input(s) {', '.join(missing)}")


def teacher_labeling_stage(
    task: str, quarantine_uri: str, teacher_model: str, messages_uri: str = "", member_votes_uri: str = "",
    candidates_uri: str = "", queries_uri: str = "", teacher_scores_uri: str = "",
    intent_config: LabelingConfig | None = None, top_k: int = 0, batch_size: int = 32, max_length: int = 128,
    on_bad_rows: str = "quarantine", prompts_uri: str = "", teacher_responses_uri: str = "",
    response_options: dict | None = None,
) -> dict[str, float]:
    """intent: messages -> member votes (`run_teacher_labeling`, intent_config); reranker: candidates ->
    teacher scores (`run_reranker_teacher_labeling`); response: prompts -> teacher responses
    (`response_stages.run_response_teacher_labeling`, response_options its keyword arguments). The outputs the
    task does not produce are written empty."""
    _check_task(task)
    if task == "response":
        from mangadistill.response_stages import run_response_teacher_labeling

        _need(task, prompts=prompts_uri)
        summary = run_response_teacher_labeling(prompts_uri, teacher_responses_uri, quarantine_uri,
                                                teacher_model=teacher_model, on_bad_rows=on_bad_rows,
                                                **(response_options or {}))
        for schema, uri in ((MEMBER_VOTES, member_votes_uri), (RERANK_TEACHER_SCORES, teacher_scores_uri)):
            if uri:
                _write_empty(schema, uri)
        return summary
    if teacher_responses_uri:
        _write_empty(TEACHER_RESPONSES, teacher_responses_uri)
    if task == "intent":
        _need(task, messages=messages_uri)
        summary = run_teacher_labeling(messages_uri, member_votes_uri, quarantine_uri,
                                       intent_config or LabelingConfig(teacher_model), on_bad_rows=on_bad_rows)
        if teacher_scores_uri:
            _write_empty(RERANK_TEACHER_SCORES, teacher_scores_uri)
        return summary
    _need(task, candidates=candidates_uri)
    summary = run_reranker_teacher_labeling(candidates_uri, teacher_scores_uri, quarantine_uri, teacher_model,
                                            queries_uri, top_k, batch_size, max_length, on_bad_rows)
    if member_votes_uri:
        _write_empty(MEMBER_VOTES, member_votes_uri)
    return summary


def distillation_training_stage(
    task: str, student_model: str, output_dir: str, soft_labels_uri: str = "", teacher_scores_uri: str = "",
    labelled_uri: str = "", intent_config: TrainConfig | None = None, reranker_config=None,
    labelled_per_query: int = 0, quarantine_uri: str = "", checkpoint_dir: str = "", on_bad_rows: str = "quarantine",
    examples_uri: str = "", response_config=None, response_teacher_model: str = "",
) -> dict[str, float]:
    """intent: `run_distillation_training` (intent_config); reranker: `run_reranker_training` (reranker_config,
    a `cross_encoder.RerankerTrainConfig`); response: `response_stages.run_response_training` on RESPONSE_EXAMPLES
    (response_config, a `response_training.ResponseTrainConfig`; response_teacher_model for its KL term)."""
    _check_task(task)
    if task == "response":
        from mangadistill.response_stages import run_response_training
        from mangadistill.response_training import ResponseTrainConfig

        _need(task, training_examples=examples_uri)
        return run_response_training(examples_uri, output_dir,
                                     response_config or ResponseTrainConfig(student_model=student_model),
                                     response_teacher_model, checkpoint_dir, quarantine_uri, on_bad_rows)
    if task == "intent":
        _need(task, soft_labels=soft_labels_uri)
        return run_distillation_training(soft_labels_uri, student_model, output_dir, intent_config or TrainConfig(),
                                         quarantine_uri, checkpoint_dir, on_bad_rows)
    from mangadistill.cross_encoder import RerankerTrainConfig

    _need(task, teacher_scores=teacher_scores_uri)
    return run_reranker_training(teacher_scores_uri, student_model, output_dir,
                                 reranker_config or RerankerTrainConfig(), labelled_uri, labelled_per_query,
                                 quarantine_uri, checkpoint_dir, on_bad_rows)


def quantization_stage(task: str, model_dir: str, output_dir: str, eval_uri: str, max_length: int = 64,
                       response_options: dict | None = None) -> dict[str, float]:
    """intent: a classifier (`run_quantization`); reranker: a one-logit cross-encoder (`run_reranker_quantization`);
    response: a causal LM student to bitsandbytes 8-bit and NF4 (`response_stages.run_response_quantization`,
    response_options its keyword arguments)."""
    _check_task(task)
    if task == "response":
        from mangadistill.response_stages import run_response_quantization

        return run_response_quantization(model_dir, output_dir, eval_uri, **(response_options or {}))
    if task == "intent":
        return run_quantization(model_dir, output_dir, eval_uri, max_length)
    return run_reranker_quantization(model_dir, output_dir, eval_uri, max_length)


def gate_check_stage(
    task: str, eval_uri: str, student_dir: str, int8_dir: str, teacher_model: str, report_uri: str, event_uri: str,
    eval_soft_labels_uri: str = "", eval_votes_uri: str = "", baseline_dir: str = "", gates_uri: str = "",
    student_name: str = "", teacher_name: str = "", latency_queries: int = 10, max_length: int = 128,
    teacher_answers_uri: str = "", review_packet_uri: str = "", review_key_uri: str = "", answers_dir: str = "",
    response_options: dict | None = None,
):
    """intent: `run_intent_gate_check`; reranker: `run_reranker_gate_check`; response:
    `response_stages.run_response_gate_check` (the eval answers of student and base student and the judgments go
    to answers_dir/{student,base_student,judgments}.parquet; response_options its other keyword arguments).
    Empty names take the task's defaults. Returns the task's outcome (.metrics, .promote; the intent one also
    .labels, .confusion). The outputs the task does not produce are written empty."""
    _check_task(task)
    names = {key: value for key, value in (("student_name", student_name), ("teacher_name", teacher_name)) if value}
    if task == "response":
        from mangadistill.response_stages import run_response_gate_check

        _need(task, eval_teacher_answers=teacher_answers_uri)
        answers = answers_dir.rstrip("/")
        return run_response_gate_check(
            eval_uri, teacher_answers_uri, student_dir, int8_dir, report_uri, event_uri, review_packet_uri,
            review_key_uri, f"{answers}/student.parquet", f"{answers}/base_student.parquet",
            judgments_uri=f"{answers}/judgments.parquet", gates_uri=gates_uri, **names, **(response_options or {}))
    for schema, uri in ((REVIEW_PACKET, review_packet_uri), (REVIEW_KEY, review_key_uri),
                        (MODEL_ANSWERS, f"{answers_dir.rstrip('/')}/student.parquet" if answers_dir else "")):
        if uri:
            _write_empty(schema, uri)
    if task == "intent":
        _need(task, eval_soft_labels=eval_soft_labels_uri, eval_member_votes=eval_votes_uri, baseline=baseline_dir)
        return run_intent_gate_check(eval_uri, eval_soft_labels_uri, eval_votes_uri, student_dir, baseline_dir,
                                     int8_dir, teacher_model, report_uri, event_uri, gates_uri=gates_uri, **names)
    return run_reranker_gate_check(eval_uri, teacher_model, student_dir, int8_dir, report_uri, event_uri,
                                   gates_uri=gates_uri, latency_queries=latency_queries, max_length=max_length,
                                   **names)
