"""Scenario 3: intent soft-label distillation from a teacher ensemble into a small CPU/mobile classifier.

teacher labeling (production log, eval split) -> soft-label ensemble -> distillation training (student, and
a hard-label-only baseline trained the same way) -> int8 quantization -> gate check -> promote or not.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Model

from mangadistill_components.distillation_training import distillation_training
from mangadistill_components.gate_check import gate_check
from mangadistill_components.quantization import quantization
from mangadistill_components.soft_label_ensemble import soft_label_ensemble
from mangadistill_components.teacher_labeling import teacher_labeling
from mangadistill_pipelines.cluster import (
    DEFAULT_GPU_NODE_SELECTOR,
    DEFAULT_GPU_TOLERATIONS,
    on_gpu,
    with_resources,
    with_retries,
    with_teacher_secret,
)

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
    rules_uri: str = "",
    gates_uri: str = "",
    adjudicator: str = "local",
    adjudicator_model: str = "smollm2-135m",
    adjudicator_base_url: str = "",
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
    teacher_name: str = "intent-teacher-ensemble",
    accelerator_type: str = "nvidia.com/gpu",
    accelerator_count: int = 1,
    gpu_node_selector: dict = DEFAULT_GPU_NODE_SELECTOR,
    gpu_tolerations: list = DEFAULT_GPU_TOLERATIONS,
) -> IntentDistillationOutputs:
    def gpu(task):
        return on_gpu(task, accelerator_type, accelerator_count, gpu_node_selector, gpu_tolerations)

    production_log = dsl.importer(artifact_uri=production_log_uri, artifact_class=dsl.Dataset)
    production_log.set_display_name("production log")
    eval_set = dsl.importer(artifact_uri=eval_uri, artifact_class=dsl.Dataset)
    eval_set.set_display_name("human-labelled eval split")

    soft, member_votes = {}, {}
    for split, messages in (("production", production_log), ("eval", eval_set)):
        votes = teacher_labeling(
            messages=messages.output, teacher_model=teacher_model, rules_uri=rules_uri, adjudicator=adjudicator,
            adjudicator_model=adjudicator_model, adjudicator_base_url=adjudicator_base_url,
            ambiguity_margin=ambiguity_margin, max_adjudications=max_adjudications,
        ).set_display_name(f"teacher labeling ({split})")
        gpu(with_retries(with_teacher_secret(with_resources(votes, "teacher-labeling"))))
        member_votes[split] = votes.outputs["member_votes"]
        soft[split] = soft_label_ensemble(
            member_votes=member_votes[split], adjudicator_weight=adjudicator_weight,
            temperature=ensemble_temperature,
        ).set_display_name(f"soft-label ensemble ({split})")
        with_resources(soft[split], "soft-label-ensemble")

    trained = {}
    for role, role_beta in (("student", beta), ("hard-label baseline", 1.0)):
        trained[role] = distillation_training(
            soft_labels=soft["production"].outputs["soft_labels"], student_model=student_model, beta=role_beta,
            temperature=temperature, epochs=epochs, learning_rate=learning_rate,
            class_weighting=class_weighting, seed=seed,
        ).set_display_name(f"distillation training ({role})")
        gpu(with_retries(with_resources(trained[role], "distillation-training")))

    quantized = quantization(model=trained["student"].outputs["model"], eval_set=eval_set.output)
    with_resources(quantized, "quantization")
    gate = gate_check(
        eval_set=eval_set.output, eval_soft_labels=soft["eval"].outputs["soft_labels"],
        eval_member_votes=member_votes["eval"],
        student=trained["student"].outputs["model"], baseline=trained["hard-label baseline"].outputs["model"],
        quantized=quantized.outputs["quantized"], teacher_model=teacher_model, gates_uri=gates_uri,
        student_name=student_name, teacher_name=teacher_name,
    )
    with_resources(gate, "gate-check")  # CPU on purpose: it measures the student's CPU latency
    return IntentDistillationOutputs(
        student=trained["student"].outputs["model"], student_int8=quantized.outputs["quantized"],
        report=gate.outputs["report"], event=gate.outputs["event"], promote=gate.outputs["promote"],
    )
