"""KFP component: measure the cross-encoder student on held-out judged queries and decide promotion."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("gate-check"), install_kfp_package=False)
def reranker_gate_check(
    eval_candidates: Input[Dataset],
    student: Input[Model],
    quantized: Input[Model],
    teacher_model: str,
    metrics: Output[Metrics],
    report: Output[HTML],
    event: Output[Artifact],
    gates_uri: str = "",
    student_name: str = "reranker-student",
    teacher_name: str = "reranker-teacher",
    latency_queries: int = 10,
    max_length: int = 128,
    handwritten_eval_uri: str = "",
    run_events_root: str = "",
    pipeline_root: str = "",
    run_id: str = "",
) -> NamedTuple("GateOutputs", [("promote", bool)]):
    """Ranks the held-out judged candidates and the hand-written set with BM25, the teacher, the student and the
    int8 student, and applies the gates: ndcg_retained = student NDCG@10 / teacher NDCG@10 (and the int8
    student's), student NDCG@10 − BM25 NDCG@10, teacher p50 / student p50 CPU latency, the int8 student's p95
    latency; on the hand-written set (BM25 top 50 over the catalog + judged titles BM25 missed, per query)
    student − BM25 NDCG@10, student / teacher NDCG@10, student − int8 NDCG@10, and the query-blind checks:
    top-1 repeat share = max over titles of the share of queries whose top 1 it is, query interaction share =
    1 − |Q|·Σ_d c_d² / Σ W² (W: scores minus their query's mean over a common candidate set, c_d: W's mean
    over queries for candidate d; 0 when the score ignores the query).

    Args:
        eval_candidates: The held-out judged queries' candidates (`rerank_candidates`, every row with a
            relevance); quality is measured against these judgments, never against teacher scores.
        student: The distilled cross-encoder folder, from reranker_distillation_training.
        quantized: The student's int8 ONNX folder, from reranker_quantization.
        teacher_model: The teacher cross-encoder (ranking quality, latency, size): a local folder, a gs://
            prefix or a builtin name.
        gates_uri: Gates YAML; empty for the packaged reranker gates.
        student_name: Name recorded in the event.
        teacher_name: Name recorded in the event.
        latency_queries: Queries timed (each one forward pass over 50 candidates, one CPU thread).
        max_length: Token limit of query + candidate text for every model.
        handwritten_eval_uri: A hand-written eval set, JSONL (local path or gs:// URI) with one query per line,
            {"query_id", "query", "kind", "judgments": [{"sku", "title", "grade"}]}, grades 0-3 against the
            packaged catalog (unlisted titles grade 0); empty for the packaged set (resources/HANDWRITTEN.md).
        run_events_root: Where a copy of the event goes for the pipeline's exit handler:
            `<run_events_root>/<run_id>/distilled_model_eval.json` (gs:// or a folder); empty:
            `<pipeline_root>/events`.
        pipeline_root: The run's pipeline root (the pipeline passes its placeholder, which a KFP cluster does not
            fill in: set run_events_root there).
        run_id: The run's id (the pipeline passes its run id placeholder); empty: no copy.

    Returns:
        metrics: Every gated and reported figure (NDCG@10 and MRR per model on both sets, handwritten_ per
            kind, retained ratios, query-blind checks, latency p50/p95, sizes).
        report: HTML report with the gate table, both sets side by side, per-kind NDCG@10, the query-blind
            check, NDCG@10 vs latency and the student's worst queries (with their text) on both sets.
        event: The `distilled_model_eval` JSON event.
        promote: True only when every gate passes; a missing or NaN metric fails its gate.
    """
    from mangadistill.core.events import run_event_uri
    from mangadistill.core.stage_io import loggable
    from mangadistill.reranker.stages import run_reranker_gate_check

    outcome = run_reranker_gate_check(
        eval_candidates.path, teacher_model, student.path, quantized.path, report.path, event.path,
        gates_uri=gates_uri, student_name=student_name, teacher_name=teacher_name, latency_queries=latency_queries,
        max_length=max_length, handwritten_eval_uri=handwritten_eval_uri,
        event_copy_uri=run_event_uri(run_id, run_events_root, pipeline_root),
    )
    for name, value in loggable(outcome.metrics).items():
        metrics.log_metric(name, value)
    return (outcome.promote,)
