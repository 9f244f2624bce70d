"""KFP component: distil the teacher's scores (and judged pairs) into a small one-logit cross-encoder."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("distillation-training"), install_kfp_package=False)
def reranker_distillation_training(
    teacher_scores: Input[Dataset],
    student_model: str,
    model: Output[Model],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
    labelled_pairs: Input[Dataset] = None,
    alpha: float = 0.5,
    distill: str = "mse",
    supervised_target: str = "graded",
    labelled_per_query: int = 0,
    epochs: int = 2,
    batch_size: int = 16,
    learning_rate: float = 5e-5,
    max_length: int = 128,
    seed: int = 13,
    checkpoint_dir: str = "",
    on_bad_rows: str = "quarantine",
):
    """Trains the cross-encoder student: loss = α·BCE(s, relevance/3) + (1−α)·(s − t)², s = sigmoid(student
    logit), t the teacher score (or MarginMSE on score differences within a query).

    Args:
        teacher_scores: The `rerank_teacher_scores` contract, from reranker_teacher_labeling.
        student_model: The student's starting point: a builtin name, a local folder or a gs:// prefix.
        labelled_pairs: Optional: judged pairs (`rerank_candidates` with relevance) for the supervised term;
            without them only teacher-scored rows that carry a relevance feed it.
        alpha: Weight α of the supervised term; 0 trains on teacher scores only, 1 on judgments only.
        distill: `mse` (MSE on scores) or `margin_mse` (score differences within a query).
        supervised_target: `graded` (relevance/3) or `binary` (relevance >= 2).
        labelled_per_query: Judged pairs kept per query, every grade represented; 0 keeps all.
        epochs: Passes over the pairs.
        batch_size: Pairs per step.
        learning_rate: AdamW learning rate (linear decay after 10% warm-up).
        max_length: Token limit of query + candidate text.
        seed: Seed for initialisation, sampling and batch order.
        checkpoint_dir: Local folder or gs:// prefix for per-epoch checkpoints, in a folder per run named by the
            fingerprint of config and data, so a retry or rerun resumes from the newest; the pipelines pass
            `<pipeline root>/checkpoints/reranker`. Empty: no checkpoints.
        on_bad_rows: `quarantine` (default) or `fail`.

    Returns:
        model: A one-logit cross-encoder folder that sentence_transformers.CrossEncoder loads (sigmoid scores)
            and transformers loads as AutoModelForSequenceClassification, with training_report.json.
        quarantine: Rows refused, with reasons (NaN or out-of-range teacher scores, duplicates).
        metrics: Pairs and queries trained on, pairs unused at this α, final loss, seconds, parameter count.
    """
    from mangadistill.reranker.cross_encoder import RerankerTrainConfig
    from mangadistill.reranker.stages import run_reranker_training

    config = RerankerTrainConfig(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, max_length=max_length, alpha=alpha,
        distill_loss=distill, supervised_target=supervised_target, seed=seed,
    )
    summary = run_reranker_training(
        teacher_scores.path, student_model, model.path, config,
        labelled_uri=labelled_pairs.path if labelled_pairs else "", labelled_per_query=labelled_per_query,
        quarantine_uri=quarantine.path, checkpoint_dir=checkpoint_dir, on_bad_rows=on_bad_rows,
    )
    for name, value in summary.items():
        metrics.log_metric(name, value)
