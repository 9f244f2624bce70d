"""KFP component: distill the response teacher's answers into a small causal LM with LoRA."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("distillation-training"), install_kfp_package=False)
def response_distillation_training(
    training_examples: Input[Dataset],
    student_model: str,
    model: Output[Model],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
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
    seed: int = 13,
    checkpoint_dir: str = "",
    checkpoint_every: int = 50,
    on_bad_rows: str = "quarantine",
):
    """Trains the student with LoRA: loss = β·CE(response tokens) + (1−β)·T²·KL(local teacher ‖ student) per
    response token.

    Args:
        training_examples: The `response_examples` mixture, from response_curation.
        student_model: The student's starting point (a causal LM): a builtin name, a local folder or a gs://
            prefix.
        keep_every: 1 trains the whole student with LoRA; k > 1 keeps every k-th layer first.
        epochs: Passes over the data.
        max_steps: Optimizer steps; 0 runs `epochs` passes.
        batch_size: Examples per step.
        learning_rate: AdamW learning rate (linear decay after warm-up).
        max_length: Token limit of prompt + response.
        lora_r: LoRA rank (alpha = 2r) on every linear layer.
        beta: Weight of the CE on the response text; 1.0 is sequence-level distillation (no teacher logits),
            below 1 needs kl_teacher_model.
        temperature: Softening temperature T of the KL term.
        kl_teacher_model: A local causal LM sharing the student's tokenizer, for beta < 1.
        gradient_checkpointing: Trade compute for activation memory.
        mixed_precision: `no`, `bf16` or `fp16` (accelerate; bf16 on GPUs that have it).
        seed: Seed for initialisation and batch order.
        checkpoint_dir: A folder (a persistent volume on a cluster) for step checkpoints; a rerun resumes from
            the newest one. Empty: no checkpoints.
        on_bad_rows: `quarantine` (default) or `fail`.

    Returns:
        model: `adapter/` (LoRA), `merged/` (a plain transformers causal LM folder) and training_report.json.
        quarantine: Rows refused, with reasons.
        metrics: Rows trained on per source, steps, first and final loss, seconds, parameter counts.
    """
    from mangadistill.response.stages import run_response_training
    from mangadistill.response.training import ResponseTrainConfig

    config = ResponseTrainConfig(
        student_model=student_model, keep_every=keep_every, epochs=epochs, max_steps=max_steps or None,
        batch_size=batch_size, learning_rate=learning_rate, max_length=max_length, lora_r=lora_r,
        lora_alpha=2 * lora_r, beta=beta, temperature=temperature, gradient_checkpointing=gradient_checkpointing,
        mixed_precision=mixed_precision, seed=seed, checkpoint_every=checkpoint_every,
    )
    summary = run_response_training(training_examples.path, model.path, quarantine.path, config,
                                    kl_teacher_model=kl_teacher_model, checkpoint_dir=checkpoint_dir,
                                    on_bad_rows=on_bad_rows)
    for name, value in summary.items():
        metrics.log_metric(name, value)
