"""Train a sequence classifier on hard labels, soft labels, or a blend: the teacher bootstrap and the students.

The objective is `losses.soft_label_distillation_loss`. The loop runs through `accelerate`: one process as it
is, or data-parallel (DDP) under `torchrun --nproc-per-node N` / `accelerate launch` (a Kubeflow Trainer
TrainJob starts it that way), bf16 autocast on a GPU that has it; each global batch is split across the
processes and into `gradient_accumulation_steps` micro-batches (`core.training.micro_batches`), so the update
is the same whatever the number of processes (exact for the unweighted loss; class weights normalise per
micro-batch). Only the main process writes checkpoints and the model. Checkpoints are written after each epoch into the
run's own folder under `checkpoint_dir` (`core.training.open_run_checkpoints`: named by the fingerprint of
config, base model and rows; local or gs://) and a run that finds one there resumes from it (model,
optimizer, scheduler, RNG state), so a killed training step on a cluster continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from mangadistill.core.storage import make_readable
from mangadistill.core.training import (
    BaseTrainConfig,
    TrainResult,
    bf16_gpu,
    fit_epochs,
    fresh_accelerator,
    latest_checkpoint,
    length_grouped_batches,
    open_run_checkpoints,
    restore_checkpoint,
    run_fingerprint,
    seed_everything,
)
from mangadistill.intent.losses import class_weights, soft_label_distillation_loss

log = logging.getLogger(__name__)
_LAYER = re.compile(r"\.layer\.(\d+)\.")


@dataclass
class TrainConfig(BaseTrainConfig):
    """The intent classifier's hyper-parameters: beta weighs the hard-label CE (1.0 = hard labels only),
    temperature softens the KL, freeze_layers freezes the embeddings and that many encoder layers."""

    beta: float = 0.5
    temperature: float = 1.0
    class_weighting: str = "sqrt_inverse"
    freeze_layers: int = 0


def _freeze(model: torch.nn.Module, layers: int) -> None:
    """Freeze the embeddings and the first `layers` encoder layers (names '...embeddings...', '.layer.N.')."""
    if layers <= 0:
        return
    for name, param in model.named_parameters():
        match = _LAYER.search(name)
        if "embeddings" in name or (match and int(match.group(1)) < layers):
            param.requires_grad_(False)


def train_classifier(
    base_model: str,
    texts: Sequence[str],
    hard_labels: Sequence[str],
    labels: Sequence[str],
    output_dir: str,
    config: TrainConfig,
    soft_labels: np.ndarray | None = None,
    checkpoint_dir: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune `base_model` (a transformers folder) into a classifier over `labels`; save to `output_dir`.

    soft_labels, when given, is (n, len(labels)) in `labels` order. The saved folder has id2label/label2id,
    the tokenizer and `training_report.json`, and loads with transformers.pipeline("text-classification").
    """
    if len(texts) != len(hard_labels):
        raise ValueError(f"{len(texts)} texts but {len(hard_labels)} hard labels")
    if soft_labels is not None and soft_labels.shape != (len(texts), len(labels)):
        raise ValueError(f"soft labels shape {soft_labels.shape}, expected {(len(texts), len(labels))}")
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({y for y in hard_labels if y not in index})
    if unknown:
        raise ValueError(f"hard labels not among {list(labels)}: {unknown}")
    seed_everything(config.seed)
    started = time.perf_counter()
    accelerator = fresh_accelerator("bf16" if bf16_gpu() else "no")
    device = accelerator.device
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index,
        ignore_mismatched_sizes=True,
    )
    model.config.problem_type = "single_label_classification"
    model.to(device)
    _freeze(model, config.freeze_layers)
    encodings = tokenizer(list(texts), truncation=True, max_length=config.max_length)
    lengths = [len(ids) for ids in encodings["input_ids"]]
    y = torch.tensor([index[label] for label in hard_labels], device=device)
    q = None if soft_labels is None else torch.tensor(soft_labels, dtype=torch.float32, device=device)
    weights = class_weights(torch.bincount(y, minlength=len(labels)), config.class_weighting)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(texts) / config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)

    fingerprint = run_fingerprint(config, base_model, list(texts), list(hard_labels), list(labels), soft_labels)
    start_epoch, losses = 0, []
    checkpoints = open_run_checkpoints(checkpoint_dir, fingerprint)
    if checkpoints and (latest := latest_checkpoint(checkpoints.path)):
        start_epoch, losses = restore_checkpoint(latest, model, optimizer, scheduler, str(device), fingerprint)

    def batch_loss(trained: torch.nn.Module, rows: np.ndarray) -> torch.Tensor:
        batch = tokenizer.pad({k: [encodings[k][i] for i in rows] for k in encodings}, return_tensors="pt")
        return soft_label_distillation_loss(trained(**batch.to(device)).logits.float(), y[rows],
                                            None if q is None else q[rows], config.beta, config.temperature, weights)

    losses = fit_epochs(
        model, optimizer, scheduler, accelerator, batch_loss=batch_loss, epochs=config.epochs,
        epoch_batches=lambda epoch: length_grouped_batches(lengths, config.batch_size, config.seed + epoch),
        max_grad_norm=config.max_grad_norm, accumulation=config.gradient_accumulation_steps,
        start_epoch=start_epoch, losses=losses, checkpoints=checkpoints, fingerprint=fingerprint, progress=progress)

    out = Path(output_dir)
    model.eval().cpu()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        make_readable(out)
    result = TrainResult(
        output_dir=str(out), epochs_run=config.epochs - start_epoch, resumed_from_epoch=start_epoch,
        epoch_losses=losses, train_seconds=time.perf_counter() - started,
        num_parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=sum(p.numel() for p in params), processes=accelerator.num_processes,
    )
    if accelerator.is_main_process:
        (out / "training_report.json").write_text(json.dumps(
            {"config": asdict(config), "base_model": base_model, **result.as_dict()}, indent=2))
    accelerator.wait_for_everyone()
    return result


