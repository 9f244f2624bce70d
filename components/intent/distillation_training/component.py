"""KFP component: distillation training of the intent student, a small classifier, on the teacher ensemble's
soft labels."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("distillation-training"), install_kfp_package=False)
def intent_distillation_training(
    soft_labels: Input[Dataset],
    student_model: str,
    model: Output[Model],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
    beta: float = 0.5,
    temperature: float = 1.0,
    epochs: int = 3,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    max_length: int = 64,
    class_weighting: str = "sqrt_inverse",
    seed: int = 13,
    checkpoint_dir: str = "",
    on_bad_rows: str = "quarantine",
):
    """Trains the student on loss = β·CE_w(hard label) + (1−β)·T²·KL_w(soft labels at T ‖ softmax(z / T)).

    Args:
        soft_labels: The `soft_labels` contract, from intent_soft_label_ensemble.
        student_model: The student's starting point: a builtin name, a local folder or a gs:// prefix.
        beta: Weight of the hard-label cross-entropy; 1.0 trains on hard labels only (the baseline).
        temperature: Softening temperature T of the KL term.
        epochs: Passes over the data.
        batch_size: Messages per step.
        learning_rate: AdamW learning rate (linear decay after 10% warm-up).
        max_length: Token limit per message.
        class_weighting: The rare-class remedy, per-class weights w of both terms: `sqrt_inverse`, `inverse` or
            `none`.
        seed: Seed for initialisation and batch order.
        checkpoint_dir: Local folder or gs:// prefix for per-epoch checkpoints, in a folder per run named by the
            fingerprint of config and data, so a retry or rerun resumes from the newest; the pipelines pass
            `<pipeline root>/checkpoints/intent`. Empty: no checkpoints.
        on_bad_rows: `quarantine` (default) or `fail`.

    Returns:
        model: A transformers classifier folder (config with id2label) that pipeline("text-classification")
            loads, with training_report.json.
        quarantine: Rows refused (soft labels that are NaN or do not sum to 1, duplicates), with reasons.
        metrics: Rows trained on, final loss, seconds, parameter count.
    """
    from mangadistill.intent.stages import run_distillation_training
    from mangadistill.intent.training import TrainConfig

    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, max_length=max_length, seed=seed,
        beta=beta, temperature=temperature, class_weighting=class_weighting,
    )
    summary = run_distillation_training(soft_labels.path, student_model, model.path, quarantine.path, config,
                                        checkpoint_dir=checkpoint_dir, on_bad_rows=on_bad_rows)
    for name, value in summary.items():
        metrics.log_metric(name, value)
