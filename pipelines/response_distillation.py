"""Response-model distillation from a retrieval-grounded teacher LLM into a small self-hosted LM.

dataset (redact, de-duplicate, split, mix) -> teacher labeling (production prompts in labeling_shards shards
labelled side by side, then merged; and the fixed eval set)
-> curation (fact-check; unsupported answers to human review; human corrections win) -> LoRA training ->
bitsandbytes 8-bit/NF4 -> evaluation and the response promotion gates -> promote or not.
"""

import argparse
import math
from pathlib import Path
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model

from mangadistill_components.response.curation import response_curation
from mangadistill_components.response.dataset import response_dataset
from mangadistill_components.response.distillation_training import response_distillation_training
from mangadistill_components.response.gate_check import response_gate_check
from mangadistill_components.response.merge_labels import response_merge_labels
from mangadistill_components.response.publish_model import response_publish_model
from mangadistill_components.response.quantization import response_quantization
from mangadistill_components.response.shard_prompts import response_shard_prompts
from mangadistill_components.response.teacher_labeling import response_teacher_labeling
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
    with_resources,
    with_retries,
    with_teacher_secret,
)
from mangadistill_pipelines.demo import DemoArguments, DemoPipeline
from mangadistill_pipelines.run_event import run_event_location, with_run_event

PIPELINE_NAME = "response-distillation"
LABELING_PARALLELISM = 8
"""At most this many production labelling shards run at once. A compile-time constant, not a pipeline
parameter: KFP 2.17's `dsl.ParallelFor(parallelism=...)` takes an int that the compiler writes into the IR
(iteratorPolicy.parallelismLimit); change it here and `mangadistill compile`. Requests in flight to the
teacher: up to LABELING_PARALLELISM x teacher_concurrency."""


class ShardLabels(NamedTuple):
    teacher_responses: Dataset
    quarantine: Dataset
    metrics: Metrics


@dsl.pipeline(name="response-labeling-shard")
def label_shard(
    shards: Input[Dataset], shard: int, teacher_model: str, teacher_base_url: str, teacher_concurrency: int,
    teacher_max_new_tokens: int, teacher_prices_uri: str, catalog_uri: str, accelerator_type: str,
    accelerator_count: int,
    gpu_node_selector: dict, gpu_tolerations: list, cpu_request: str, cpu_limit: str, memory_request: str,
    memory_limit: str,
) -> ShardLabels:
    """One production labelling shard (`response_teacher_labeling` with `shard`), on the labelling stage's
    resources. A pipeline of its own, called in the dsl.ParallelFor, because the KFP 2.17.3 compiler does not
    pass pipeline parameters used only in a task's resources (CPU, memory, accelerator) into a ParallelFor's
    sub-DAG: set on a task directly in the loop, the run fails with "Parent pipeline input argument
    'pipelinechannel--labeling_memory_request' not found". As this pipeline's inputs they are plumbed."""
    task = response_teacher_labeling(
        prompts=shards, teacher_model=teacher_model, teacher_base_url=teacher_base_url,
        cache_uri=under_pipeline_root("teacher-cache", "response"), concurrency=teacher_concurrency,
        max_new_tokens=teacher_max_new_tokens, prices_uri=teacher_prices_uri, catalog_uri=catalog_uri, shard=shard,
    ).set_display_name("teacher labeling (production shard)")
    with_resources(task, cpu_request, cpu_limit, memory_request, memory_limit)
    on_gpu(with_retries(with_teacher_secret(task)), accelerator_type, accelerator_count, gpu_node_selector,
           gpu_tolerations)
    return ShardLabels(task.outputs["teacher_responses"], task.outputs["quarantine"], task.outputs["metrics"])


class ResponseDistillationOutputs(NamedTuple):
    student: Model
    student_quantized: Model
    report: HTML
    event: Artifact
    review_packet: Dataset
    review_key: Dataset
    teacher_review: Dataset
    promote: bool


@dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
def response_distillation(
    production_prompts_uri: str,
    human_corrected_uri: str,
    refusal_escalation_uri: str,
    eval_uri: str,
    scale: float = 1.0,
    validation_fraction: float = 0.05,
    seed: int = 13,
    teacher_model: str = "managed-teacher-v07",
    teacher_base_url: str = "",
    teacher_concurrency: int = 8,
    teacher_prices_uri: str = "",
    labeling_shards: int = 1,
    teacher_max_new_tokens: int = 0,
    teacher_hardware: str = "",
    catalog_uri: str = "",
    student_model: str = "smollm2-135m",
    keep_every: int = 1,
    epochs: int = 1,
    max_steps: int = 0,
    checkpoint_every: int = 50,
    batch_size: int = 8,
    learning_rate: float = 2e-4,
    max_length: int = 256,
    lora_r: int = 16,
    beta: float = 1.0,
    temperature: float = 2.0,
    kl_teacher_model: str = "",
    gradient_checkpointing: bool = False,
    mixed_precision: str = "no",
    quantization_prompts: int = 4,
    quantization_max_new_tokens: int = 32,
    base_student_model: str = "",
    served_variant: str = "baseline",
    student_hardware: str = "gcp-g2-standard-4",
    eval_max_new_tokens: int = 128,
    judge_base_url: str = "",
    judge_model: str = "",
    judge_guided_choice: bool = False,
    judge_structured_api: str = "structured_outputs",
    judge_calibration_pairs: int = 0,
    proxy_model: str = "minilm-l6",
    completed_reviews_uri: str = "",
    gates_uri: str = "",
    student_name: str = "response-student",
    models_root: str = "",
    run_events_root: str = "",
    teacher_name: str = "managed-teacher-v07",
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
) -> ResponseDistillationOutputs:
    resources = sized_by(dict(locals()))  # the <stage>_cpu_request ... parameters above

    def gpu(task):
        return on_gpu(task, accelerator_type, accelerator_count, gpu_node_selector, gpu_tolerations)

    imported = {}
    for name, uri in (("production prompts", production_prompts_uri), ("human-corrected", human_corrected_uri),
                      ("refusal/escalation", refusal_escalation_uri), ("human-reviewed eval set", eval_uri)):
        imported[name] = dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset)
        imported[name].set_display_name(name)

    dataset = response_dataset(
        production_prompts=imported["production prompts"].output, human_corrected=imported["human-corrected"].output,
        refusal_escalation=imported["refusal/escalation"].output, scale=scale,
        validation_fraction=validation_fraction, seed=seed,
    ).set_display_name("response dataset (redaction first)")
    resources(dataset, "data")

    # production prompts: split into labeling_shards shards, labelled side by side (all sharing the answer
    # cache), merged with a check that no prompt is lost or doubled; the eval set is small: one task
    split = response_shard_prompts(prompts=dataset.outputs["prompts"], shard_count=labeling_shards)
    resources(split.set_display_name("split prompts into labelling shards"), "data")
    with dsl.ParallelFor(split.outputs["Output"], parallelism=LABELING_PARALLELISM, name="labelling-shards") as shard:
        sharded = label_shard(
            shards=split.outputs["shards"], shard=shard, teacher_model=teacher_model,
            teacher_base_url=teacher_base_url, teacher_concurrency=teacher_concurrency,
            teacher_max_new_tokens=teacher_max_new_tokens, teacher_prices_uri=teacher_prices_uri,
            catalog_uri=catalog_uri, accelerator_type=accelerator_type, accelerator_count=accelerator_count,
            gpu_node_selector=gpu_node_selector, gpu_tolerations=gpu_tolerations,
            cpu_request=labeling_cpu_request, cpu_limit=labeling_cpu_limit,
            memory_request=labeling_memory_request, memory_limit=labeling_memory_limit,
        ).set_display_name("teacher labeling (production shard)")
    merged = response_merge_labels(
        shards=split.outputs["shards"], shard_responses=dsl.Collected(sharded.outputs["teacher_responses"]),
        shard_quarantines=dsl.Collected(sharded.outputs["quarantine"]),
        shard_metrics=dsl.Collected(sharded.outputs["metrics"]),
    )
    resources(merged.set_display_name("merge labelling shards (none lost or doubled)"), "data")
    eval_set = imported["human-reviewed eval set"].output
    eval_labels = response_teacher_labeling(
        prompts=eval_set, teacher_model=teacher_model, teacher_base_url=teacher_base_url,
        cache_uri=under_pipeline_root("teacher-cache", "response"), concurrency=teacher_concurrency,
        max_new_tokens=teacher_max_new_tokens, prices_uri=teacher_prices_uri, catalog_uri=catalog_uri,
    ).set_display_name("teacher labeling (eval)")
    gpu(with_retries(with_teacher_secret(resources(eval_labels, "labeling"))))

    curated = response_curation(
        teacher_responses=merged.outputs["teacher_responses"],
        human_corrected=dataset.outputs["human_corrected_examples"],
        refusal_escalation=dataset.outputs["refusal_escalation_examples"], scale=scale, seed=seed,
        validation_fraction=validation_fraction, catalog_uri=catalog_uri,
    ).set_display_name("curation (fact check, human corrections)")
    resources(curated, "data")

    trained = response_distillation_training(
        training_examples=curated.outputs["train"], student_model=student_model, epochs=epochs,
        max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate, max_length=max_length,
        keep_every=keep_every, lora_r=lora_r, beta=beta, temperature=temperature, kl_teacher_model=kl_teacher_model,
        gradient_checkpointing=gradient_checkpointing, mixed_precision=mixed_precision, seed=seed,
        checkpoint_dir=under_pipeline_root("checkpoints", "response"), checkpoint_every=checkpoint_every,
    ).set_display_name("distillation training (LoRA student)")
    gpu(with_retries(resources(trained, "training")))

    quantized = response_quantization(
        model=trained.outputs["model"], eval_set=eval_set, generation_prompts=quantization_prompts,
        max_new_tokens=quantization_max_new_tokens,
    ).set_display_name("quantization (bitsandbytes 8-bit, NF4)")
    gpu(resources(quantized, "quantization"))

    gate = response_gate_check(
        eval_set=eval_set, eval_teacher_answers=eval_labels.outputs["teacher_responses"],
        student=trained.outputs["model"], quantized=quantized.outputs["quantized"],
        base_student_model=base_student_model, served_variant=served_variant, student_hardware=student_hardware,
        teacher_model=teacher_model, teacher_base_url=teacher_base_url, teacher_hardware=teacher_hardware,
        judge_base_url=judge_base_url, judge_model=judge_model, judge_guided_choice=judge_guided_choice,
        judge_structured_api=judge_structured_api, judge_calibration_pairs=judge_calibration_pairs,
        judge_cache_uri=under_pipeline_root("judge-cache", "response"), proxy_model=proxy_model,
        completed_reviews_uri=completed_reviews_uri,
        gates_uri=gates_uri, max_new_tokens=eval_max_new_tokens, catalog_uri=catalog_uri, student_name=student_name,
        teacher_name=teacher_name,
        **run_event_location(run_events_root),
    ).set_display_name("evaluation and gate check")
    with_teacher_secret(resources(gate, "gate"))  # the judge API's key
    promoted = gate.outputs["promote"] == True  # noqa: E712 (a KFP condition, not a Python comparison)
    with dsl.If(promoted, "promoted"), dsl.If(models_root != "", "models_root given"):
        published = response_publish_model(
            student=trained.outputs["model"], report=gate.outputs["report"], event=gate.outputs["event"],
            models_root=models_root, model_name=student_name, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        published.set_display_name("publish the promoted student")
        with_fixed_resources(published, PUBLISH)
    return ResponseDistillationOutputs(
        student=trained.outputs["model"], student_quantized=quantized.outputs["quantized"],
        report=gate.outputs["report"], event=gate.outputs["event"], review_packet=gate.outputs["review_packet"],
        review_key=gate.outputs["review_key"], teacher_review=curated.outputs["review"],
        promote=gate.outputs["promote"],
    )


response_distillation_cluster = with_run_event(response_distillation, PIPELINE_NAME, __doc__.splitlines()[0])
"""What compile writes and submit sends: response_distillation's tasks under an exit handler that logs the run's event
(the gate's, or a failure event) as one JSON line for any outcome (`run_event`); no pipeline outputs."""

# --- the demo: `mangadistill run response` on the built-in sample data ---------------------------------------

RESPONSE_OUTPUTS = {
    "student": "student:merged",  # the merged LoRA student: a plain transformers causal LM folder
    "student_quantized": "student-quantized",  # int8/ and nf4/ (bitsandbytes), response_quantization_report.json
    "report": "report.html",
    "event": "distilled_model_eval.json",
    "review_packet": "review_packet.parquet",  # blinded A/B pairs (student vs base student) for human reviewers
    "review_key": "review_key.parquet",  # the packet's unblinding key: keep it away from the reviewers
    "teacher_review": "teacher_review.parquet",  # teacher answers kept out of training for unsupported claims
}
"""Under --output-dir for `run response` ("name:subfolder": the subfolder of the output is published).
Completed reviews of review_packet go back in with --param completed_reviews_uri=FILE (columns packet_id,
choice a/b/tie, reviewer)."""
RESPONSE_DEMO_SCALE = 0.00032
"""Share of the full training mixture in the CPU demo: 8 production prompts, 2 human-corrected, 1 refusal."""
RESPONSE_DEMO_EVAL_PER_SLICE = 6
"""Rows per slice the demo takes from the hand-written evaluation set (response/evalset.py; 18 per slice in
all): 24 prompts keep `run response` near five minutes on 2 cores; --response-eval-per-slice 18 runs all 72."""
RESPONSE_DEMO_PARAMS = {
    "teacher_model": "smollm2-135m", "teacher_max_new_tokens": 48, "teacher_concurrency": 1,
    "teacher_hardware": "gcp-n2-standard-2", "teacher_name": "smollm2-135m-local-teacher",
    "student_model": "smollm2-135m", "max_steps": 8, "batch_size": 4, "learning_rate": 1e-3, "max_length": 192,
    "lora_r": 8, "quantization_prompts": 3, "quantization_max_new_tokens": 32,
    "student_hardware": "gcp-n2-standard-2", "eval_max_new_tokens": 48, "student_name": "manga-student-135m-lora",
    "judge_model": "smollm2-135m", "judge_calibration_pairs": 16,
}
"""`run response` on 2 CPU cores: SmolLM2-135M-Instruct teaches itself through the local HTTP teacher server
(the only instruct model that installs offline), the student is the same model with LoRA, and both are served
and priced on the machine they ran on (a 2-vCPU VM). The same model judges teacher against student through the
same HTTP path, with guided choice; it is too small to judge well, and the report says so when its verdicts
follow the position. --param overrides any of these (judge_base_url=URL judge_model=NAME for a real judge)."""
DATA_FILES = {"production_prompts": "jsonl", "human_corrected": "parquet", "refusal_escalation": "parquet",
              "eval": "parquet"}
"""The demo's input files (name: format); each becomes the pipeline argument <name>_uri."""


def generate_response_data(args: argparse.Namespace) -> dict[str, Path]:
    """Write the response task's inputs under args.workdir/data/response-seed<seed>-scale<scale> (a folder per
    size, so the local runner's cache never reuses another size's tasks): 1.5 times the mixture's targets at
    args.response_scale (de-duplication and the caps have something to do), and the first
    args.response_eval_per_slice rows per slice of the hand-written evaluation set (never generated: a student
    learns the generator's habits). Files already there are kept."""
    import pyarrow as pa

    from mangadistill.core import storage
    from mangadistill.response.dataset import mixture_targets
    from mangadistill.response.evalset import handwritten_eval_set
    from mangadistill.sample_data.responses import (
        generate_human_corrected,
        generate_production_prompts,
        generate_refusal_escalation,
    )

    folder = args.workdir / "data" / f"response-seed{args.seed}-scale{args.response_scale:g}"
    paths = {name: folder / f"{name}.{ext}" for name, ext in DATA_FILES.items()}
    paths["eval"] = folder / f"eval-handwritten-{args.response_eval_per_slice}-per-slice.parquet"
    if all(path.exists() for path in paths.values()):
        return paths
    targets = {name: math.ceil(1.5 * n) for name, n in mixture_targets(args.response_scale).items()}
    prompts = generate_production_prompts(targets["production_prompts"], args.seed)
    tables = {
        "production_prompts": pa.Table.from_pylist([{"prompt_id": p["prompt_id"], "prompt": p["prompt"]}
                                                    for p in prompts]),
        "human_corrected": pa.Table.from_pylist(generate_human_corrected(targets["human_corrected"], args.seed)),
        "refusal_escalation": pa.Table.from_pylist(
            generate_refusal_escalation(targets["refusal_escalation"], args.seed)),
        "eval": handwritten_eval_set(per_slice=args.response_eval_per_slice),
    }
    for name, table in tables.items():
        storage.write_table(table, str(paths[name]))
    return paths


def prepare_response_demo(args: argparse.Namespace, params: dict) -> DemoArguments:
    """The sample inputs, RESPONSE_DEMO_PARAMS, args.teacher as the teacher when given, and the --param
    overrides. The teacher's answers are cached under the local pipeline root across runs."""
    paths = generate_response_data(args)
    arguments = {
        **{f"{name}_uri": str(path.resolve()) for name, path in paths.items()},
        "scale": args.response_scale, **RESPONSE_DEMO_PARAMS,
        **({"teacher_model": args.teacher} if args.teacher else {}), **params,
    }
    return DemoArguments(arguments, local_inputs=[str(paths["eval"].parent)])


DEMO = DemoPipeline(
    name="response", pipeline=response_distillation, outputs=RESPONSE_OUTPUTS, prepare=prepare_response_demo,
    generate_data=generate_response_data,
)
