"""Batch inference with a transformers sequence classifier, its outputs put in a caller's label order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from mangadistill.core.training import default_device


class LabelMismatchError(ValueError):
    """A model's id2label does not cover the labels a stage needs."""


def label_order(id2label: dict, labels: Sequence[str], source: str) -> list[int]:
    """Indices into the model's outputs that put them in `labels` order; error names missing labels."""
    by_name = {str(name): int(i) for i, name in id2label.items()}
    missing = [name for name in labels if name not in by_name]
    if missing:
        raise LabelMismatchError(
            f"{source}: config id2label lacks {missing}; it has {sorted(by_name)}. The model must be trained "
            f"on exactly these labels: {list(labels)}"
        )
    return [by_name[name] for name in labels]


class TextClassifier:
    """A sequence-classification folder; `predict_proba` returns probabilities in `labels` order.

    Batches are formed over texts sorted by length, so padding stays small; results come back in input order.
    """

    def __init__(self, model_dir: str, labels: Sequence[str], max_length: int = 64, device: str | None = None):
        device = device or default_device()
        self.model_dir, self.labels, self.max_length, self.device = model_dir, list(labels), max_length, device
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()
        self._order = label_order(self.model.config.id2label, self.labels, model_dir)

    @torch.inference_mode()
    def logits(self, texts: Sequence[str], batch_size: int = 64, progress: str | None = None) -> np.ndarray:
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc=progress, disable=progress is None or len(starts) < 2, unit="batch"):
            idx = order[start : start + batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            out[idx] = self.model(**enc).logits[:, self._order].float().cpu().numpy()
        return out

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64, progress: str | None = None) -> np.ndarray:
        logits = self.logits(texts, batch_size, progress)
        return softmax(logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
