"""Intent soft-label distillation from a teacher ensemble into a small CPU/mobile classifier.

teacher labeling (production log, generated eval split, hand-written eval set) -> soft-label ensemble ->
distillation training (student, and a hard-label-only baseline trained the same way) -> int8 quantization ->
gate check on both eval sets -> promote or not.
"""

import argparse
import json
from pathlib import Path
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Model

from mangadistill_components.intent.distillation_training import intent_distillation_training
from mangadistill_components.intent.gate_check import intent_gate_check
from mangadistill_components.intent.handwritten_eval import intent_handwritten_eval
from mangadistill_components.intent.publish_model import intent_publish_model
from mangadistill_components.intent.quantization import intent_quantization
from mangadistill_components.intent.soft_label_ensemble import intent_soft_label_ensemble
from mangadistill_components.intent.teacher_labeling import intent_teacher_labeling
from mangadistill_pipelines.cluster import (
    DATA,
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
    with_teacher_secret,
)
from mangadistill_pipelines.demo import DemoArguments, DemoPipeline, demo_teacher_dir, teacher_or_demo
from mangadistill_pipelines.run_event import run_event_location, with_run_event

PIPELINE_NAME = "intent-soft-label-distillation"


class IntentDistillationOutputs(NamedTuple):
    student: Model
    student_int8: Model
    report: HTML
    event: Artifact
    promote: bool


@dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
def intent_distillation(
    production_log_uri: str,
    eval_uri: str,
    teacher_model: str,
    student_model: str = "minilm-l2",
    labels_uri: str = "",
    rules_uri: str = "",
    gates_uri: str = "",
    handwritten_eval_uri: str = "",
    adjudicator: str = "local",
    adjudicator_model: str = "smollm2-135m",
    adjudicator_base_url: str = "",
    adjudicator_structured_api: str = "",
    ambiguity_margin: float = 0.2,
    max_adjudications: int = 1000,
    adjudicator_weight: float = 0.5,
    ensemble_temperature: float = 1.0,
    beta: float = 0.5,
    temperature: float = 1.0,
    epochs: int = 2,
    learning_rate: float = 5e-4,
    class_weighting: str = "sqrt_inverse",
    seed: int = 13,
    student_name: str = "intent-student",
    models_root: str = "",
    run_events_root: str = "",
    teacher_name: str = "intent-teacher-ensemble",
    accelerator_type: str = "nvidia.com/gpu",
    accelerator_count: int = 1,
    gpu_node_selector: dict = DEFAULT_GPU_NODE_SELECTOR,
    gpu_tolerations: list = DEFAULT_GPU_TOLERATIONS,
    labeling_cpu_request: str = LABELING.cpu_request,
    labeling_cpu_limit: str = LABELING.cpu_limit,
    labeling_memory_request: str = LABELING.memory_request,
    labeling_memory_limit: str = LABELING.memory_limit,
    data_cpu_request: str = DATA.cpu_request,
    data_cpu_limit: str = DATA.cpu_limit,
    data_memory_request: str = DATA.memory_request,
    data_memory_limit: str = DATA.memory_limit,
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
) -> IntentDistillationOutputs:
    resources = sized_by(dict(locals()))  # the <stage>_cpu_request ... parameters above

    def gpu(task):
        return on_gpu(task, accelerator_type, accelerator_count, gpu_node_selector, gpu_tolerations)

    production_log = dsl.importer(artifact_uri=production_log_uri, artifact_class=dsl.Dataset)
    production_log.set_display_name("production log")
    eval_set = dsl.importer(artifact_uri=eval_uri, artifact_class=dsl.Dataset)
    eval_set.set_display_name("human-labelled eval split")
    handwritten = intent_handwritten_eval(uri=handwritten_eval_uri, labels_uri=labels_uri, teacher_model=teacher_model)
    handwritten.set_display_name("hand-written eval set")
    # it only reads and validates one small file
    handwritten.set_cpu_request("0.5").set_cpu_limit("1").set_memory_request("1Gi").set_memory_limit("2Gi")

    soft, member_votes = {}, {}
    splits = (("production", production_log.output), ("eval", eval_set.output),
              ("hand-written", handwritten.outputs["handwritten_set"]))
    for split, messages in splits:
        votes = intent_teacher_labeling(
            messages=messages, teacher_model=teacher_model, labels_uri=labels_uri, rules_uri=rules_uri,
            adjudicator=adjudicator, adjudicator_model=adjudicator_model, adjudicator_base_url=adjudicator_base_url,
            adjudicator_structured_api=adjudicator_structured_api,
            ambiguity_margin=ambiguity_margin, max_adjudications=max_adjudications,
        ).set_display_name(f"teacher labeling ({split})")
        gpu(with_retries(with_teacher_secret(resources(votes, "labeling"))))
        member_votes[split] = votes.outputs["member_votes"]
        soft[split] = intent_soft_label_ensemble(
            member_votes=member_votes[split], adjudicator_weight=adjudicator_weight,
            temperature=ensemble_temperature,
        ).set_display_name(f"soft-label ensemble ({split})")
        resources(soft[split], "data")

    trained = {}
    for role, role_beta in (("student", beta), ("hard-label baseline", 1.0)):
        trained[role] = intent_distillation_training(
            soft_labels=soft["production"].outputs["soft_labels"], student_model=student_model, beta=role_beta,
            temperature=temperature, epochs=epochs, learning_rate=learning_rate,
            class_weighting=class_weighting, seed=seed, checkpoint_dir=under_pipeline_root("checkpoints", "intent"),
        ).set_display_name(f"distillation training ({role})")
        gpu(with_retries(resources(trained[role], "training")))

    quantized = intent_quantization(model=trained["student"].outputs["model"], eval_set=eval_set.output)
    resources(quantized, "quantization")
    gate = intent_gate_check(
        eval_set=eval_set.output, eval_soft_labels=soft["eval"].outputs["soft_labels"],
        eval_member_votes=member_votes["eval"], handwritten_set=handwritten.outputs["handwritten_set"],
        handwritten_soft_labels=soft["hand-written"].outputs["soft_labels"],
        handwritten_member_votes=member_votes["hand-written"],
        student=trained["student"].outputs["model"], baseline=trained["hard-label baseline"].outputs["model"],
        quantized=quantized.outputs["quantized"], teacher_model=teacher_model, gates_uri=gates_uri,
        student_name=student_name, teacher_name=teacher_name,
        **run_event_location(run_events_root),
    )
    resources(gate, "gate")  # CPU on purpose: it measures the student's CPU latency
    promoted = gate.outputs["promote"] == True  # noqa: E712 (a KFP condition, not a Python comparison)
    with dsl.If(promoted, "promoted"), dsl.If(models_root != "", "models_root given"):
        published = intent_publish_model(
            student=trained["student"].outputs["model"], quantized=quantized.outputs["quantized"],
            report=gate.outputs["report"], event=gate.outputs["event"], models_root=models_root,
            model_name=student_name, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        published.set_display_name("publish the promoted student")
        with_fixed_resources(published, PUBLISH)
    return IntentDistillationOutputs(
        student=trained["student"].outputs["model"], student_int8=quantized.outputs["quantized"],
        report=gate.outputs["report"], event=gate.outputs["event"], promote=gate.outputs["promote"],
    )


intent_distillation_cluster = with_run_event(intent_distillation, PIPELINE_NAME, __doc__.splitlines()[0])
"""What compile writes and submit sends: intent_distillation's tasks under an exit handler that logs the run's event
(the gate's, or a failure event) as one JSON line for any outcome (`run_event`); no pipeline outputs."""

# --- the demo: `mangadistill data | bootstrap-teacher intent | run intent` ----------------------------------

OUTPUTS = {
    "student": "student",
    "student_int8": "student-int8",
    "report": "report.html",
    "event": "distilled_model_eval.json",
}
"""Under --output-dir for `run intent` (documented in README.md)."""
DEMO_TEACHER_BASE = "mpnet-base"
"""The encoder the demo teacher classifier is fine-tuned from when --base-model is not given."""


def data_paths(workdir: Path) -> dict[str, Path]:
    """The sample catalog and the intent splits under `workdir`/data."""
    data = workdir / "data"
    return {
        "catalog": data / "catalog.parquet",
        "labelled": data / "intent_labelled.parquet",
        "production_log": data / "intent_production_log.parquet",
        "production_truth": data / "intent_production_truth.parquet",
        "eval": data / "intent_eval.parquet",
        "eval_truth": data / "intent_eval_truth.parquet",
    }


def generate_data(args: argparse.Namespace) -> dict[str, Path]:
    """Write the catalog and the intent splits (args.n_labelled, n_production, n_eval rows) under
    args.workdir/data; the messages mention the catalog's titles."""
    from mangadistill.core import storage
    from mangadistill.sample_data.catalog import load_catalog
    from mangadistill.sample_data.messages import build_sample_splits

    catalog = load_catalog()
    splits = build_sample_splits(seed=args.seed, n_labelled=args.n_labelled, n_production=args.n_production,
                                 n_eval=args.n_eval, titles=catalog.to_pylist())
    paths = data_paths(args.workdir)
    storage.write_table(catalog, str(paths["catalog"]))
    for name, table in splits.items():
        storage.write_table(table, str(paths[name]))
    return paths


def ensure_data(args: argparse.Namespace) -> dict[str, Path]:
    """The sample data paths, generated first when any is missing."""
    paths = data_paths(args.workdir)
    if not all(path.exists() for path in paths.values()):
        print(f"generating intent sample data in {args.workdir / 'data'} ...", flush=True)
        generate_data(args)
    return paths


def bootstrap_teacher(args: argparse.Namespace) -> Path:
    """Fine-tune the demo teacher classifier from args.base_model (default mpnet-base) on the labelled split,
    into args.workdir/teachers/intent."""
    from mangadistill.intent.stages import bootstrap_intent_teacher

    labelled = ensure_data(args)["labelled"]
    base_model = args.base_model or DEMO_TEACHER_BASE
    out = demo_teacher_dir(args.workdir, "intent")
    print(f"fine-tuning the demo intent teacher from {base_model} on {labelled} ...", flush=True)
    summary = bootstrap_intent_teacher(str(labelled), base_model, str(out))
    print(f"teacher ready in {out}: {json.dumps(summary)}", flush=True)
    return out


def prepare(args: argparse.Namespace, params: dict) -> DemoArguments:
    """The pipeline's arguments on the sample data; the teacher is args.teacher, else the demo teacher (built
    first when args.workdir/teachers/intent has none). The hand-written set is the packaged one unless params
    name a `handwritten_eval_uri` (the CLI mounts a local file's folder for the DockerRunner)."""
    paths = ensure_data(args)
    teacher = teacher_or_demo(args, "intent", bootstrap_teacher)
    arguments = {
        "production_log_uri": str(paths["production_log"].resolve()),
        "eval_uri": str(paths["eval"].resolve()),
        "teacher_model": teacher,
        **params,
    }
    return DemoArguments(arguments, local_inputs=[str(paths["eval"].parent.resolve())])


DEMO = DemoPipeline(name="intent", pipeline=intent_distillation, outputs=OUTPUTS, prepare=prepare,
                    generate_data=generate_data, bootstrap_teacher=bootstrap_teacher)
