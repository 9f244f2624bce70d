"""KFP component: distillation training of a small student (intent: a classifier on soft labels; reranker: a
cross-encoder on teacher scores and judged pairs; response: a causal LM with LoRA on curated answers)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from mangadistill_components.images import stage_image


@dsl.component(base_image=stage_image("distillation-training"), install_kfp_package=False)
def distillation_training(
    student_model: str,
    model: Output[Model],
    quarantine: Output[Dataset],
    metrics: Output[Metrics],
    soft_labels: Input[Dataset] = None,
    teacher_scores: Input[Dataset] = None,
    labelled_pairs: Input[Dataset] = None,
    training_examples: Input[Dataset] = None,
    task: str = "intent",
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
    alpha: float = 0.5,
    distill: str = "mse",
    supervised_target: str = "graded",
    labelled_per_query: int = 0,
    keep_every: int = 1,
    max_steps: int = 0,
    lora_r: int = 16,
    gradient_checkpointing: bool = False,
    mixed_precision: str = "no",
    kl_teacher_model: str = "",
):
    """Trains the student. intent: loss = β·CE_w(hard label) + (1−β)·T²·KL(soft labels ‖ student); reranker:
    loss = α·BCE(s, relevance/3) + (1−α)·MSE(s, teacher_score), s = sigmoid(student logit), or MarginMSE;
    response: LoRA, loss = β·CE(response tokens) + (1−β)·T²·KL(local teacher ‖ student) per response token.

    Args:
        student_model: The student's starting point: a builtin name, a local folder or a gs:// prefix.
        soft_labels: intent only (required there): the `soft_labels` contract, from soft_label_ensemble.
        teacher_scores: reranker only (required there): the `rerank_teacher_scores` contract, from
            teacher_labeling.
        labelled_pairs: reranker only, optional: judged pairs (`rerank_candidates` with relevance) for the
            supervised term.
        training_examples: response only (required there): the `response_examples` mixture, from
            response_curation.
        task: `intent`, `reranker` or `response`.
        beta: intent: weight of the hard-label cross-entropy; 1.0 trains on hard labels only (the baseline).
            response: weight of the CE on the response text; 1.0 (sequence-level, no teacher logits) or below 1
            with kl_teacher_model.
        temperature: intent, response: softening temperature T of the KL term.
        epochs: Passes over the data.
        batch_size: Examples per step.
        learning_rate: AdamW learning rate (linear decay after 10% warm-up).
        max_length: Token limit per message (intent) or per query + candidate text (reranker).
        class_weighting: intent only: the rare-class remedy: `sqrt_inverse`, `inverse` or `none` CE class weights.
        seed: Seed for initialisation and batch order.
        checkpoint_dir: A folder (a persistent volume on a cluster) for per-epoch checkpoints; a rerun
            resumes from the newest one. Empty: no checkpoints.
        on_bad_rows: `quarantine` (default) or `fail`.
        alpha: reranker only: weight α of the supervised term; 0 trains on teacher scores only, 1 on judgments only.
        distill: reranker only: `mse` (the seed's MSE on scores) or `margin_mse` (score differences within a query).
        supervised_target: reranker only: `graded` (relevance/3) or `binary` (relevance >= 2).
        labelled_per_query: reranker only: judged pairs kept per query, every grade represented; 0 keeps all.
        keep_every: response only: 1 trains the whole student with LoRA; k > 1 keeps every k-th layer first.
        max_steps: response only: optimizer steps; 0 runs `epochs` passes.
        lora_r: response only: LoRA rank (alpha = 2r) on every linear layer.
        gradient_checkpointing: response only: trade compute for activation memory.
        mixed_precision: response only: `no`, `bf16` or `fp16` (accelerate; bf16 on GPUs that have it).
        kl_teacher_model: response only: a local causal LM sharing the student's tokenizer, for beta < 1.

    Returns:
        model: A transformers folder. intent: a classifier (config with id2label) that
            pipeline("text-classification") loads; reranker: a one-logit cross-encoder that
            sentence_transformers.CrossEncoder loads (sigmoid scores); response: `adapter/` (LoRA), `merged/`
            (a plain causal LM folder) and training_report.json.
        quarantine: Rows refused, with reasons.
        metrics: Rows trained on, final loss, seconds, parameter count.
    """
    from mangadistill.intent.stages import distillation_training_stage
    from mangadistill.intent.training import TrainConfig
    from mangadistill.reranker.cross_encoder import RerankerTrainConfig

    intent_config = reranker_config = response_config = None
    if task == "response":
        from mangadistill.response.training import ResponseTrainConfig

        response_config = ResponseTrainConfig(
            student_model=student_model, keep_every=keep_every, epochs=epochs, max_steps=max_steps or None,
            batch_size=batch_size, learning_rate=learning_rate, max_length=max_length, lora_r=lora_r,
            lora_alpha=2 * lora_r, beta=beta, temperature=temperature, gradient_checkpointing=gradient_checkpointing,
            mixed_precision=mixed_precision, seed=seed,
        )
    elif task == "reranker":
        reranker_config = RerankerTrainConfig(
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, max_length=max_length, alpha=alpha,
            distill_loss=distill, supervised_target=supervised_target, seed=seed,
        )
    else:
        intent_config = TrainConfig(
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, max_length=max_length,
            beta=beta, temperature=temperature, class_weighting=class_weighting, seed=seed,
        )
    summary = distillation_training_stage(
        task, student_model, model.path, soft_labels_uri=soft_labels.path if soft_labels else "",
        teacher_scores_uri=teacher_scores.path if teacher_scores else "",
        labelled_uri=labelled_pairs.path if labelled_pairs else "", intent_config=intent_config,
        reranker_config=reranker_config, labelled_per_query=labelled_per_query, quarantine_uri=quarantine.path,
        checkpoint_dir=checkpoint_dir, on_bad_rows=on_bad_rows,
        examples_uri=training_examples.path if training_examples else "", response_config=response_config,
        response_teacher_model=kl_teacher_model,
    )
    for name, value in summary.items():
        metrics.log_metric(name, value)
