"""Scenario 1: response-model distillation from a retrieval-grounded teacher LLM into a small self-hosted LM.

dataset (redact, de-duplicate, split, mix) -> teacher labeling (production prompts, and the fixed eval set)
-> curation (fact-check; unsupported answers to human review; human corrections win) -> LoRA training ->
bitsandbytes 8-bit/NF4 -> evaluation and the seed's promotion gate -> promote or not.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Model

from mangadistill_components.distillation_training import distillation_training
from mangadistill_components.gate_check import gate_check
from mangadistill_components.quantization import quantization
from mangadistill_components.response_curation import response_curation
from mangadistill_components.response_dataset import response_dataset
from mangadistill_components.teacher_labeling import teacher_labeling
from mangadistill_pipelines.cluster import (
    DEFAULT_GPU_NODE_SELECTOR,
    DEFAULT_GPU_TOLERATIONS,
    on_gpu,
    with_resources,
    with_retries,
    with_teacher_secret,
)

PIPELINE_NAME = "response-distillation"


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
    teacher_cache_uri: str = "",
    teacher_concurrency: int = 8,
    teacher_max_new_tokens: int = 0,
    teacher_hardware: str = "",
    catalog_uri: str = "",
    student_model: str = "smollm2-135m",
    keep_every: int = 1,
    epochs: int = 1,
    max_steps: int = 0,
    batch_size: int = 8,
    learning_rate: float = 2e-4,
    max_length: int = 256,
    lora_r: int = 16,
    beta: float = 1.0,
    temperature: float = 2.0,
    kl_teacher_model: str = "",
    gradient_checkpointing: bool = False,
    mixed_precision: str = "no",
    checkpoint_dir: str = "",
    quantization_prompts: int = 4,
    quantization_max_new_tokens: int = 32,
    base_student_model: str = "",
    served_variant: str = "baseline",
    student_hardware: str = "gcp-g2-standard-4",
    eval_max_new_tokens: int = 128,
    judge_base_url: str = "",
    judge_model: str = "",
    judge_guided_choice: bool = False,
    proxy_model: str = "minilm-l6",
    completed_reviews_uri: str = "",
    gates_uri: str = "",
    student_name: str = "response-student",
    teacher_name: str = "managed-teacher-v07",
    accelerator_type: str = "nvidia.com/gpu",
    accelerator_count: int = 1,
    gpu_node_selector: dict = DEFAULT_GPU_NODE_SELECTOR,
    gpu_tolerations: list = DEFAULT_GPU_TOLERATIONS,
) -> ResponseDistillationOutputs:
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
    with_resources(dataset, "soft-label-ensemble")

    teacher = {}
    eval_set = imported["human-reviewed eval set"].output
    for split, prompts in (("production", dataset.outputs["prompts"]), ("eval", eval_set)):
        teacher[split] = teacher_labeling(
            prompts=prompts, teacher_model=teacher_model, task="response", teacher_base_url=teacher_base_url,
            cache_uri=teacher_cache_uri, concurrency=teacher_concurrency, max_new_tokens=teacher_max_new_tokens,
            catalog_uri=catalog_uri,
        ).set_display_name(f"teacher labeling ({split})")
        gpu(with_retries(with_teacher_secret(with_resources(teacher[split], "teacher-labeling"))))

    curated = response_curation(
        teacher_responses=teacher["production"].outputs["teacher_responses"],
        human_corrected=dataset.outputs["human_corrected_examples"],
        refusal_escalation=dataset.outputs["refusal_escalation_examples"], scale=scale, seed=seed,
        validation_fraction=validation_fraction, catalog_uri=catalog_uri,
    ).set_display_name("curation (fact check, human corrections)")
    with_resources(curated, "soft-label-ensemble")

    trained = distillation_training(
        training_examples=curated.outputs["train"], student_model=student_model, task="response", epochs=epochs,
        max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate, max_length=max_length,
        keep_every=keep_every, lora_r=lora_r, beta=beta, temperature=temperature, kl_teacher_model=kl_teacher_model,
        gradient_checkpointing=gradient_checkpointing, mixed_precision=mixed_precision, seed=seed,
        checkpoint_dir=checkpoint_dir,
    ).set_display_name("distillation training (LoRA student)")
    gpu(with_retries(with_resources(trained, "distillation-training")))

    quantized = quantization(
        model=trained.outputs["model"], eval_set=eval_set, task="response",
        generation_prompts=quantization_prompts, max_new_tokens=quantization_max_new_tokens,
    ).set_display_name("quantization (bitsandbytes 8-bit, NF4)")
    gpu(with_resources(quantized, "quantization"))

    gate = gate_check(
        eval_set=eval_set, eval_teacher_answers=teacher["eval"].outputs["teacher_responses"],
        student=trained.outputs["model"], quantized=quantized.outputs["quantized"], teacher_model=teacher_model,
        task="response", base_student_model=base_student_model, served_variant=served_variant,
        student_hardware=student_hardware,
        teacher_hardware=teacher_hardware, judge_base_url=judge_base_url, judge_model=judge_model,
        judge_guided_choice=judge_guided_choice,
        proxy_model=proxy_model, completed_reviews_uri=completed_reviews_uri, gates_uri=gates_uri,
        max_new_tokens=eval_max_new_tokens, catalog_uri=catalog_uri, student_name=student_name,
        teacher_name=teacher_name,
    ).set_display_name("evaluation and gate check")
    with_teacher_secret(with_resources(gate, "gate-check"))  # the judge API's key
    return ResponseDistillationOutputs(
        student=trained.outputs["model"], student_quantized=quantized.outputs["quantized"],
        report=gate.outputs["report"], event=gate.outputs["event"], review_packet=gate.outputs["review_packet"],
        review_key=gate.outputs["review_key"], teacher_review=curated.outputs["review"],
        promote=gate.outputs["promote"],
    )
