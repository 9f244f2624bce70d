"""Losses of the reranker student: supervised relevance, score distillation (MSE) and MarginMSE.

A cross-encoder outputs one logit z per (query, candidate) pair; its score is s = sigmoid(z), a probability
in [0, 1] on the same scale as the teacher's score t. Per-row losses return one value per row, zero where the
row's mask is False, so a batch can mix labelled and unlabelled rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DISTILL_LOSSES = ("mse", "margin_mse")


def supervised_relevance_loss(logits: torch.Tensor, targets: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """Per row: BCE(sigmoid(z), y) = -(y·log s + (1 - y)·log(1 - s)), y in [0, 1] (graded relevance / 3, or
    a binary label); 0 where `labelled` is False."""
    bce = F.binary_cross_entropy_with_logits(logits, targets.clamp(0.0, 1.0), reduction="none")
    return torch.where(labelled, bce, torch.zeros_like(bce))


def score_mse_loss(logits: torch.Tensor, teacher_scores: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Per row: (sigmoid(z) - t)^2, the MSE between student and teacher scores; 0 where `scored` is False."""
    squared = (torch.sigmoid(logits) - teacher_scores) ** 2
    return torch.where(scored, squared, torch.zeros_like(squared))


def margin_mse_loss(
    logits: torch.Tensor, teacher_scores: torch.Tensor, scored: torch.Tensor, groups: torch.Tensor
) -> torch.Tensor:
    """Mean over pairs (i, j), i < j, of the same group (query) and both scored, of
    ((s_i - s_j) - (t_i - t_j))^2, with s = sigmoid(z) (Hofstätter et al.'s MarginMSE on the score scale).
    The student copies the teacher's score differences, not its absolute scores. 0 when no pair exists."""
    scores = torch.sigmoid(logits)
    student_margin = scores[:, None] - scores[None, :]
    teacher_margin = teacher_scores[:, None] - teacher_scores[None, :]
    pairs = (groups[:, None] == groups[None, :]) & scored[:, None] & scored[None, :]
    pairs = torch.triu(pairs, diagonal=1)
    if not bool(pairs.any()):
        return logits.sum() * 0.0
    return ((student_margin - teacher_margin) ** 2)[pairs].mean()


def reranker_distillation_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    labelled: torch.Tensor,
    teacher_scores: torch.Tensor,
    scored: torch.Tensor,
    alpha: float,
    distill: str = "mse",
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """The student objective, loss = alpha·supervised + (1 - alpha)·distillation.

    distill="mse": mean over the batch's rows of alpha·BCE_i·[labelled_i] + (1 - alpha)·(s_i - t_i)^2·[scored_i];
    a row without a supervised label contributes only its distillation term, and vice versa.
    distill="margin_mse": alpha·(mean over rows of BCE_i·[labelled_i]) + (1 - alpha)·margin_mse_loss (pairs of
    rows of the same query, `groups`).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    supervised = supervised_relevance_loss(logits, targets, labelled)
    if distill == "mse":
        return (alpha * supervised + (1.0 - alpha) * score_mse_loss(logits, teacher_scores, scored)).mean()
    if distill == "margin_mse":
        if groups is None:
            raise ValueError("margin_mse needs the group (query) of every row")
        return alpha * supervised.mean() + (1.0 - alpha) * margin_mse_loss(logits, teacher_scores, scored, groups)
    raise ValueError(f"unknown distillation loss {distill!r}; expected one of {DISTILL_LOSSES}")
