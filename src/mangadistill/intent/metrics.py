"""Evaluation metrics: pure numpy functions over label indices and probability rows.

Labels are int indices into a label list (for intents, `mangadistill.intent.labels.INTENTS`); probabilities are
an (n, num_classes) array in that order. Every function checks its inputs and raises `ValueError` naming
the argument and the first bad row. Undefined values are NaN, never a silent 0: a class with no true rows
has NaN recall, a ratio over a zero denominator is NaN, an empty calibration bin has NaN accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _labels(values: ArrayLike, name: str, num_classes: int | None = None) -> NDArray[np.int64]:
    """`values` as a 1-D int64 array, checked to be whole numbers in [0, num_classes)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of label indices, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: expected integer label indices, got dtype {array.dtype}")
    labels = array.astype(np.int64)
    if num_classes is not None:
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if bad.size:
            row = int(bad[0])
            raise ValueError(
                f"{name}: row {row} has label index {labels[row]}, outside [0, {num_classes})"
            )
    return labels


def _pair(
    y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Checked (y_true, y_pred): same non-zero length, valid indices."""
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    true = _labels(y_true, "y_true", num_classes)
    pred = _labels(y_pred, "y_pred", num_classes)
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} rows but y_pred has {pred.size}")
    if true.size == 0:
        raise ValueError("y_true and y_pred are empty")
    return true, pred


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of rows where the prediction equals the true label."""
    true, pred = _pair(y_true, y_pred)
    return float(np.mean(true == pred))


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> NDArray[np.int64]:
    """Counts `cm[t, p]` of rows with true label t predicted as p; shape (num_classes, num_classes)."""
    true, pred = _pair(y_true, y_pred, num_classes)
    flat = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_recall(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> NDArray[np.float64]:
    """recall_c = TP_c / (TP_c + FN_c); NaN for a class with no true rows."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> float:
    """Unweighted mean over classes of F1_c = 2·TP_c / (2·TP_c + FP_c + FN_c).

    A class with no true rows and no predicted rows (TP + FP + FN = 0) has no defined F1 and is excluded
    from the mean, so a label set larger than the evaluation split does not inflate or deflate the score.
    A class that is predicted but never true (or true but never predicted) counts with F1 = 0.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    true_positives = np.diag(cm)
    denominator = cm.sum(axis=0) + cm.sum(axis=1)  # = 2·TP + FP + FN
    present = denominator > 0
    return float(np.mean(2 * true_positives[present] / denominator[present]))


def _probabilities(probs: ArrayLike, y_true: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Checked (probs, y_true): probs is (n, k), finite, in [0, 1]; y_true indexes its columns."""
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"probs: expected a non-empty (rows, classes) array, got shape {array.shape}")
    bad = np.flatnonzero(~np.all(np.isfinite(array) & (array >= 0.0) & (array <= 1.0), axis=1))
    if bad.size:
        row = int(bad[0])
        raise ValueError(f"probs: row {row} has a value that is not a probability in [0, 1]: {array[row]}")
    labels = _labels(y_true, "y_true", array.shape[1])
    if labels.size != array.shape[0]:
        raise ValueError(f"probs has {array.shape[0]} rows but y_true has {labels.size}")
    return array, labels


def reliability_bins(probs: ArrayLike, y_true: ArrayLike, bins: int = 10) -> list[dict[str, float]]:
    """Top-label reliability table over `bins` equal-width confidence bins.

    Row confidence is max_c probs[i, c], its prediction the argmax. Bin b covers (b/bins, (b+1)/bins]
    (the first bin also holds confidence 0). Each dict: lower, upper, count, accuracy (fraction of the
    bin's rows predicted correctly) and confidence (mean confidence in the bin); an empty bin has count 0
    and NaN accuracy and confidence. All `bins` bins are returned, in order.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    array, labels = _probabilities(probs, y_true)
    confidence = array.max(axis=1)
    correct = (array.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_of_row = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    table = []
    for b in range(bins):
        in_bin = bin_of_row == b
        count = int(in_bin.sum())
        table.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "accuracy": float(correct[in_bin].mean()) if count else float("nan"),
                "confidence": float(confidence[in_bin].mean()) if count else float("nan"),
            }
        )
    return table


def expected_calibration_error(probs: ArrayLike, y_true: ArrayLike, bins: int = 10) -> float:
    """Top-label ECE = Σ_b |B_b|/n · |acc(B_b) − conf(B_b)| over the bins of `reliability_bins`."""
    table = reliability_bins(probs, y_true, bins)
    total = sum(row["count"] for row in table)
    return float(
        sum(row["count"] / total * abs(row["accuracy"] - row["confidence"]) for row in table if row["count"])
    )


def min_recall_delta(
    student_recall: ArrayLike, baseline_recall: ArrayLike, class_indices: Sequence[int]
) -> float:
    """min over `class_indices` of student recall − baseline recall (the rare-class gate).

    Classes where either recall is NaN (no true rows in the split) are skipped; NaN when none remain, so
    a split without rare rows fails its gate instead of passing it.
    """
    student = np.asarray(student_recall, dtype=np.float64)
    baseline = np.asarray(baseline_recall, dtype=np.float64)
    if student.shape != baseline.shape:
        raise ValueError(f"student recall has shape {student.shape} but baseline has {baseline.shape}")
    if not class_indices:
        raise ValueError("class_indices is empty")
    deltas = student[list(class_indices)] - baseline[list(class_indices)]
    deltas = deltas[np.isfinite(deltas)]
    return float(deltas.min()) if deltas.size else float("nan")


def top_k_accuracy(probs: ArrayLike, acceptable: Sequence[Sequence[int]], k: int = 2) -> float:
    """Fraction of rows whose k most probable classes hold at least one of the row's acceptable classes:
    1/n · Σ_i 1[top_k(p_i) ∩ A_i ≠ ∅]. With A_i = {label_i, also_plausible_i} this is the ambiguous slice's
    top-2 accuracy; ties between equal probabilities go to the lower class index."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(acceptable) == 0 or any(len(row) == 0 for row in acceptable):
        raise ValueError("acceptable: every row needs at least one acceptable class")
    array, _ = _probabilities(probs, [row[0] for row in acceptable])
    for i, row in enumerate(acceptable):
        _labels(list(row), f"acceptable[{i}]", array.shape[1])
    top = np.argsort(-array, axis=1, kind="stable")[:, :k]
    return float(np.mean([bool(set(top[i].tolist()) & set(row)) for i, row in enumerate(acceptable)]))


def negative_log_likelihood(probs: ArrayLike, y_true: ArrayLike, floor: float = 1e-12) -> float:
    """Mean NLL of the true labels, 1/n · Σ_i −ln max(p_i[y_i], floor) (natural log; floor keeps a hard 0 finite)."""
    array, labels = _probabilities(probs, y_true)
    return float(np.mean(-np.log(np.maximum(array[np.arange(labels.size), labels], floor))))
