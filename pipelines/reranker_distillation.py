"""Distil a cross-encoder reranker teacher into a small cross-encoder student for CPU serving.

teacher labeling (production queries' BM25 candidates) -> distillation training (loss = α·supervised + (1−α)·MSE
on teacher scores, or MarginMSE; judged train pairs give the supervised term) -> int8 quantization -> gate check
(NDCG@10 and MRR of student, teacher and BM25 on held-out judged queries, CPU latency) -> promote or not.

Defaults sized for `mangadistill run reranker` on 2 CPU cores, where the 110M-parameter teacher scores about
5 pairs a second: the teacher scores each production query's BM25 top_k=8 (its hardest negatives and likely
positives), the models read 64 tokens (query + catalog facts, no description), and the student sees
labelled_per_query=8 judged train pairs per query for the supervised term, 3 epochs at 2e-4: with 2 pairs, 2
epochs at 1e-4 (76 steps) the student underfit (NDCG@10 0.52, below BM25's 0.70); 3 epochs rather than 5 to keep the run
under 5 minutes (held-out NDCG@10 0.801 vs 0.795: not worse); see README.

`DEMO` (at the bottom) is what `mangadistill run reranker` needs: the sample data, the demo teacher and the
names the outputs are published under.
"""

import argparse
import json
from pathlib import Path
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Model

from mangadistill_components.reranker.distillation_training import reranker_distillation_training
from mangadistill_components.reranker.gate_check import reranker_gate_check
from mangadistill_components.reranker.publish_model import reranker_publish_model
from mangadistill_components.reranker.quantization import reranker_quantization
from mangadistill_components.reranker.teacher_labeling import reranker_teacher_labeling
from mangadistill_pipelines.cluster import (
    DEFAULT_GPU_NODE_SELECTOR,
    DEFAULT_GPU_TOLERATIONS,
    GATE,
    LABELING,
    PUBLISH,
    QUANTIZATION,
    TRAINING,
    on_gpu,
    sized_by,
    under_pipeline_root,
    with_fixed_resources,
    with_retries,
)
from mangadistill_pipelines.demo import DemoArguments, DemoPipeline, demo_teacher_dir, teacher_or_demo
from mangadistill_pipelines.run_event import run_event_location, with_run_event

PIPELINE_NAME = "reranker-distillation"


class RerankerDistillationOutputs(NamedTuple):
    student: Model
    student_int8: Model
    report: HTML
    event: Artifact
    promote: bool


@dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
def reranker_distillation(
    production_candidates_uri: str,
    production_queries_uri: str,
    labelled_candidates_uri: str,
    eval_candidates_uri: str,
    teacher_model: str,
    student_model: str = "minilm-l3",
    top_k: int = 8,
    max_length: int = 64,
    alpha: float = 0.5,
    distill: str = "mse",
    supervised_target: str = "graded",
    labelled_per_query: int = 8,
    epochs: int = 3,
    batch_size: int = 32,
    learning_rate: float = 2e-4,
    seed: int = 13,
    gates_uri: str = "",
    handwritten_eval_uri: str = "",
    latency_queries: int = 3,
    student_name: str = "reranker-student",
    models_root: str = "",
    run_events_root: str = "",
    teacher_name: str = "reranker-teacher",
    accelerator_type: str = "nvidia.com/gpu",
    accelerator_count: int = 1,
    gpu_node_selector: dict = DEFAULT_GPU_NODE_SELECTOR,
    gpu_tolerations: list = DEFAULT_GPU_TOLERATIONS,
    labeling_cpu_request: str = LABELING.cpu_request,
    labeling_cpu_limit: str = LABELING.cpu_limit,
    labeling_memory_request: str = LABELING.memory_request,
    labeling_memory_limit: str = LABELING.memory_limit,
    training_cpu_request: str = TRAINING.cpu_request,
    training_cpu_limit: str = TRAINING.cpu_limit,
    training_memory_request: str = TRAINING.memory_request,
    training_memory_limit: str = TRAINING.memory_limit,
    quantization_cpu_request: str = QUANTIZATION.cpu_request,
    quantization_cpu_limit: str = QUANTIZATION.cpu_limit,
    quantization_memory_request: str = QUANTIZATION.memory_request,
    quantization_memory_limit: str = QUANTIZATION.memory_limit,
    gate_cpu_request: str = GATE.cpu_request,
    gate_cpu_limit: str = GATE.cpu_limit,
    gate_memory_request: str = GATE.memory_request,
    gate_memory_limit: str = GATE.memory_limit,
) -> RerankerDistillationOutputs:
    resources = sized_by(dict(locals()))  # the <stage>_cpu_request ... parameters above

    def gpu(task):
        return on_gpu(task, accelerator_type, accelerator_count, gpu_node_selector, gpu_tolerations)

    def imported(uri, name: str):
        return dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset).set_display_name(name).output

    production = imported(production_candidates_uri, "production candidates (BM25 top-k)")
    production_queries = imported(production_queries_uri, "production queries")
    labelled = imported(labelled_candidates_uri, "judged train candidates")
    eval_candidates = imported(eval_candidates_uri, "held-out judged eval candidates")

    scored = reranker_teacher_labeling(
        candidates=production, queries=production_queries, teacher_model=teacher_model, top_k=top_k,
        max_length=max_length,
    ).set_display_name("teacher labeling (production candidates)")
    gpu(with_retries(resources(scored, "labeling")))

    trained = reranker_distillation_training(
        teacher_scores=scored.outputs["teacher_scores"], labelled_pairs=labelled,
        student_model=student_model, alpha=alpha, distill=distill, supervised_target=supervised_target,
        labelled_per_query=labelled_per_query, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        max_length=max_length, seed=seed, checkpoint_dir=under_pipeline_root("checkpoints", "reranker"),
    ).set_display_name("distillation training (student)")
    gpu(with_retries(resources(trained, "training")))

    quantized = reranker_quantization(model=trained.outputs["model"], eval_candidates=eval_candidates,
                                      max_length=max_length)
    resources(quantized, "quantization")
    gate = reranker_gate_check(
        eval_candidates=eval_candidates, student=trained.outputs["model"], quantized=quantized.outputs["quantized"],
        teacher_model=teacher_model, gates_uri=gates_uri, latency_queries=latency_queries, max_length=max_length,
        student_name=student_name, teacher_name=teacher_name,
        **run_event_location(run_events_root), handwritten_eval_uri=handwritten_eval_uri,
    )
    resources(gate, "gate")  # CPU on purpose: it measures the student's CPU latency
    promoted = gate.outputs["promote"] == True  # noqa: E712 (a KFP condition, not a Python comparison)
    with dsl.If(promoted, "promoted"), dsl.If(models_root != "", "models_root given"):
        published = reranker_publish_model(
            student=trained.outputs["model"], quantized=quantized.outputs["quantized"],
            report=gate.outputs["report"], event=gate.outputs["event"], models_root=models_root,
            model_name=student_name, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        published.set_display_name("publish the promoted student")
        with_fixed_resources(published, PUBLISH)
    return RerankerDistillationOutputs(
        student=trained.outputs["model"], student_int8=quantized.outputs["quantized"],
        report=gate.outputs["report"], event=gate.outputs["event"], promote=gate.outputs["promote"],
    )


reranker_distillation_cluster = with_run_event(reranker_distillation, PIPELINE_NAME, __doc__.splitlines()[0])
"""What compile writes and submit sends: reranker_distillation's tasks under an exit handler that logs the run's event
(the gate's, or a failure event) as one JSON line for any outcome (`run_event`); no pipeline outputs."""

# --- the demo: `mangadistill run reranker` on the built-in sample data ---------------------------------------

PIPELINE_OUTPUTS = {
    "student": "student",
    "student_int8": "student-int8",
    "report": "report.html",
    "event": "distilled_model_eval.json",
}
HELD_OUT_OUTPUTS = {"eval_queries": "eval_queries.parquet", "eval_candidates": "eval_candidates.parquet"}
RERANKER_OUTPUTS = {**PIPELINE_OUTPUTS, **HELD_OUT_OUTPUTS}
"""Under --output-dir for `run reranker`: the pipeline's outputs, and the held-out queries (with the catalog facts
their grades come from) and their judged candidates the gate measured on."""
RERANKER_TEACHER_BASE = "mpnet-base"
RERANKER_DATA = {"n_train": 200, "n_production": 100, "n_eval": 20, "k": 20}
"""Reranker sample data sizes: queries per split and BM25 candidates per query (see README for why)."""
DATA_SPLITS = ("train_queries", "train_candidates", "production_queries", "production_candidates",
               "production_truth", "eval_queries", "eval_candidates")


def reranker_data_dir(workdir: Path) -> Path:
    """Where the reranker's sample data lives: workdir/data/reranker."""
    return workdir / "data" / "reranker"


def reranker_data_paths(workdir: Path) -> dict[str, Path]:
    """{split: <reranker_data_dir>/<split>.parquet} for every split of the reranker's sample data."""
    return {name: reranker_data_dir(workdir) / f"{name}.parquet" for name in DATA_SPLITS}


def generate_demo_data(args: argparse.Namespace) -> dict[str, Path]:
    """Write the reranker's queries, BM25 candidates and judgments under args.workdir/data/reranker (args.seed,
    args.n_rerank_train / n_rerank_production / n_rerank_eval queries, args.rerank_k candidates per query)."""
    from mangadistill.sample_data.queries import generate_reranker_data

    written = generate_reranker_data(str(reranker_data_dir(args.workdir)), args.seed, args.n_rerank_train,
                                     args.n_rerank_production, args.n_rerank_eval, args.rerank_k)
    return {name: Path(uri) for name, uri in written.items()}


def _ensure_demo_data(args: argparse.Namespace) -> dict[str, Path]:
    paths = reranker_data_paths(args.workdir)
    if not all(path.exists() for path in paths.values()):
        print(f"generating reranker sample data in {reranker_data_dir(args.workdir)} ...", flush=True)
        generate_demo_data(args)
    return paths


def bootstrap_demo_teacher(args: argparse.Namespace) -> Path:
    """Fine-tune the demo cross-encoder teacher from args.base_model (default RERANKER_TEACHER_BASE) on the
    judged train split; return its folder."""
    from mangadistill.reranker.stages import bootstrap_reranker_teacher as bootstrap

    train_candidates = _ensure_demo_data(args)["train_candidates"]
    base_model = args.base_model or RERANKER_TEACHER_BASE
    out = demo_teacher_dir(args.workdir, "reranker")
    print(f"fine-tuning the demo reranker teacher (cross-encoder) from {base_model} on {train_candidates} ...",
          flush=True)
    summary = bootstrap(str(train_candidates), base_model, str(out))
    print(f"teacher ready in {out}: {json.dumps(summary)}", flush=True)
    return out


def prepare_demo(args: argparse.Namespace, params: dict) -> DemoArguments:
    """The sample data's splits as the pipeline's inputs, args.teacher (default: the demo teacher, fine-tuned
    first when it is not there yet) and the --param overrides; the held-out split as extra outputs."""
    paths = _ensure_demo_data(args)
    teacher = teacher_or_demo(args, "reranker", bootstrap_demo_teacher)
    arguments = {
        "production_candidates_uri": str(paths["production_candidates"].resolve()),
        "production_queries_uri": str(paths["production_queries"].resolve()),
        "labelled_candidates_uri": str(paths["train_candidates"].resolve()),
        "eval_candidates_uri": str(paths["eval_candidates"].resolve()),
        "teacher_model": teacher,
        **params,
    }
    return DemoArguments(arguments, local_inputs=[str(reranker_data_dir(args.workdir))],
                         extra_outputs={HELD_OUT_OUTPUTS[name]: paths[name] for name in HELD_OUT_OUTPUTS})


DEMO = DemoPipeline(
    name="reranker", pipeline=reranker_distillation, outputs=PIPELINE_OUTPUTS, prepare=prepare_demo,
    generate_data=generate_demo_data, bootstrap_teacher=bootstrap_demo_teacher,
)
