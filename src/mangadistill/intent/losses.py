"""Distillation losses, one formula each.

`soft_label_distillation_loss` is the intent student's objective:

    L = β · CE_w(z, y) + (1 − β) · T² · KL_w(q_T ‖ softmax(z / T))

z are the student logits, y the hard labels (the ensemble's argmax), q the teacher ensemble's soft labels and
q_T = softmax(log q / T) the same distribution at temperature T (for a teacher given as logits this is
Hinton's softmax(z_t / T)). The T² factor keeps the soft term's gradient scale independent of T. β = 1 trains
on hard labels only (the project's baseline).

w are optional per-class weights, the remedy for rare classes. They weigh each row by the class of its hard
label in both terms: CE_w = Σ_i w_{y_i} CE_i / Σ_i w_{y_i} (torch's weighted mean) and likewise
KL_w = Σ_i w_{y_i} KL_i / Σ_i w_{y_i}. Weighting only the CE term lets the soft term, where rare intents
carry little mass, wash them out ("dark knowledge hurts rare classes").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-8


def temper(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(log p / T): T > 1 flattens a distribution, T < 1 sharpens it, T = 1 returns it."""
    return torch.softmax(torch.log(probs.clamp_min(_EPS)) / temperature, dim=-1)


def soft_label_distillation_loss(
    logits: torch.Tensor,
    hard_labels: torch.Tensor,
    soft_labels: torch.Tensor | None,
    beta: float,
    temperature: float,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """β·CE_w(z, y) + (1 − β)·T²·KL_w(q_T ‖ softmax(z/T)), weighted means over the batch."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    hard = F.cross_entropy(logits, hard_labels, weight=class_weights)
    if soft_labels is None or beta == 1.0:
        return hard
    target = temper(soft_labels, temperature)
    log_student = F.log_softmax(logits / temperature, dim=-1)
    per_row = F.kl_div(log_student, target, reduction="none").sum(dim=-1)
    if class_weights is None:
        kl = per_row.mean()
    else:
        row_weights = class_weights[hard_labels]
        kl = (row_weights * per_row).sum() / row_weights.sum()
    return beta * hard + (1.0 - beta) * temperature**2 * kl


def class_weights(counts: torch.Tensor, scheme: str) -> torch.Tensor | None:
    """Per-class CE weights from label counts: inverse w_c = n / (K·n_c), sqrt_inverse its square root.

    Classes with no examples get weight 0 (they contribute nothing). "none" returns None.
    """
    if scheme == "none":
        return None
    if scheme not in ("inverse", "sqrt_inverse"):
        raise ValueError(f"class weighting must be none, inverse or sqrt_inverse, got {scheme!r}")
    counts = counts.to(torch.float32)
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.sqrt() if scheme == "sqrt_inverse" else weights
