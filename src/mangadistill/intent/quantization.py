"""CPU / mobile int8 for a trained intent classifier: `core.onnx_int8` export and int8, an ONNX Runtime runner,
and the size, latency and accuracy comparison of torch fp32, ONNX fp32 and ONNX int8."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mangadistill.core.benchmarking import measure_latency, path_size_mb, torch_threads
from mangadistill.core.onnx_int8 import (
    INT8_FILENAME,
    OPSET,
    REPORT_FILENAME,
    cpu_session,
    export_loaded,
    load_fp32_classifier,
    quantize_int8,
    read_labels,
    safetensors_size_mb,
)
from mangadistill.intent.classifier import softmax

LATENCY_MAX_ITEMS = 100
RUNNERS = ("torch_fp32", "onnx_fp32", "onnx_int8")
EVAL_FIELDS = (
    *(f"{name}_latency_{stat}_ms" for name in RUNNERS for stat in ("p50", "p95")),
    "latency_n",
    "onnx_fp32_max_abs_prob_diff",
    "top1_agreement",
    "accuracy_fp32",
    "accuracy_int8",
    "accuracy_delta",
)


class OnnxTextClassifier:
    """Runs an exported classifier with ONNX Runtime on CPU; `labels` come from tokenizer_dir/config.json."""

    def __init__(
        self, onnx_path: str, tokenizer_dir: str, max_length: int = 64, threads: int | None = None
    ) -> None:
        self.labels = read_labels(tokenizer_dir)
        self.max_length = max_length
        self.session = cpu_session(onnx_path, threads)
        self.input_names = [graph_input.name for graph_input in self.session.get_inputs()]
        num_outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(num_outputs, int) and num_outputs != len(self.labels):
            raise ValueError(
                f"{onnx_path} has {num_outputs} outputs but {tokenizer_dir}/config.json names "
                f"{len(self.labels)} labels"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Softmax probabilities, shape (len(texts), len(labels)), columns in `labels` order."""
        chunks = []
        for start in range(0, len(texts), batch_size):
            encoded = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            missing = [name for name in self.input_names if name not in encoded]
            if missing:
                raise ValueError(f"the tokenizer does not produce the graph inputs {missing}")
            feeds = {name: encoded[name].astype(np.int64) for name in self.input_names}
            chunks.append(softmax(self.session.run(None, feeds)[0]))
        return np.concatenate(chunks) if chunks else np.empty((0, len(self.labels)), dtype=np.float32)


def _torch_predict_proba(
    classifier: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 32,
) -> np.ndarray:
    """Softmax probabilities of the torch classifier, tokenized exactly as OnnxTextClassifier does."""
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            chunks.append(torch.softmax(classifier(**encoded).logits, dim=-1).numpy())
    return np.concatenate(chunks)


def _check_eval_inputs(
    eval_texts: Sequence[str] | None, eval_labels: Sequence[str] | None, labels: list[str]
) -> None:
    """eval_texts, when given, is not empty; labels need as many texts and must be the model's labels."""
    if eval_texts is not None and not len(eval_texts):
        raise ValueError("eval_texts is empty: pass None to skip the latency and agreement figures")
    if eval_labels is None:
        return
    if eval_texts is None or len(eval_texts) != len(eval_labels):
        n_texts = None if eval_texts is None else len(eval_texts)
        raise ValueError(f"eval_labels has {len(eval_labels)} rows but eval_texts has {n_texts}")
    known = set(labels)
    for row, label in enumerate(eval_labels):
        if label not in known:
            raise ValueError(f"eval_labels row {row}: unknown label {label!r}, expected one of {labels}")


def quantize_classifier(
    model_dir: str,
    output_dir: str,
    eval_texts: Sequence[str] | None = None,
    eval_labels: Sequence[str] | None = None,
    max_length: int = 64,
    threads: int = 1,
) -> dict:
    """Export, int8-quantize and compare the classifier in `model_dir`; writes a self-contained `output_dir`.

    `output_dir` gets model.int8.onnx, the tokenizer (re-saved with save_pretrained), config.json (copied)
    and quantization_report.json.
    The report (also returned): sizes in MiB (fp32 safetensors, fp32 onnx, int8 onnx) and
    size_ratio = fp32_onnx_size_mb / int8_size_mb. With eval_texts: batch-1 latency p50/p95 of torch fp32,
    onnx fp32 and onnx int8 on the first LATENCY_MAX_ITEMS texts, all with `threads` intra-op threads, the
    largest absolute difference between torch and onnx fp32 probabilities, and top1_agreement, the share of
    texts where the torch fp32 and int8 argmax agree. With eval_labels (label names): accuracy_fp32 (torch),
    accuracy_int8 and accuracy_delta = accuracy_int8 - accuracy_fp32. Fields without their inputs are None.
    One thread by default: torch's default (one per host core, even in a CPU-limited container) stalls
    badly when the cores are shared (MiniLM-L6 batch-1 p50 124 ms at 2 threads vs 11 ms at 1 on a busy
    2-core machine), and mobile serving is usually one thread per request.
    """
    labels = read_labels(model_dir)
    _check_eval_inputs(eval_texts, eval_labels, labels)
    os.makedirs(output_dir, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.save_pretrained(output_dir)
    shutil.copyfile(os.path.join(model_dir, "config.json"), os.path.join(output_dir, "config.json"))
    classifier = load_fp32_classifier(model_dir)
    int8_path = os.path.join(output_dir, INT8_FILENAME)
    report: dict = {
        "model_dir": model_dir,
        "int8_model": INT8_FILENAME,
        "labels": labels,
        "max_length": max_length,
        "threads": threads,
        "n_eval": 0 if eval_texts is None else len(eval_texts),
        "fp32_torch_size_mb": safetensors_size_mb(model_dir),
    }
    with tempfile.TemporaryDirectory(prefix="mangadistill-onnx-") as scratch:
        fp32_path = os.path.join(scratch, "model.onnx")
        export_loaded(classifier, tokenizer, fp32_path, max_length, OPSET)
        quantize_int8(fp32_path, int8_path)
        report["fp32_onnx_size_mb"] = path_size_mb(fp32_path)
        report["int8_size_mb"] = path_size_mb(int8_path)
        report["size_ratio"] = report["fp32_onnx_size_mb"] / report["int8_size_mb"]
        report.update(dict.fromkeys(EVAL_FIELDS))
        if eval_texts is not None:
            runners = {
                "torch_fp32": lambda texts: _torch_predict_proba(classifier, tokenizer, texts, max_length),
                "onnx_fp32": OnnxTextClassifier(fp32_path, output_dir, max_length, threads).predict_proba,
                "onnx_int8": OnnxTextClassifier(int8_path, output_dir, max_length, threads).predict_proba,
            }
            with torch_threads(threads):
                report.update(_compare_runners(runners, eval_texts, eval_labels, labels))
    with open(os.path.join(output_dir, REPORT_FILENAME), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    return report


def _compare_runners(
    runners: dict[str, Callable[[Sequence[str]], np.ndarray]],
    eval_texts: Sequence[str],
    eval_labels: Sequence[str] | None,
    labels: list[str],
) -> dict:
    """The EVAL_FIELDS of the report from the torch_fp32, onnx_fp32 and onnx_int8 probability functions."""
    fields: dict = {}
    for name, run in runners.items():
        timing = measure_latency(run, eval_texts, batch_size=1, warmup=5, max_items=LATENCY_MAX_ITEMS)
        fields[f"{name}_latency_p50_ms"] = timing["p50_ms"]
        fields[f"{name}_latency_p95_ms"] = timing["p95_ms"]
        fields["latency_n"] = timing["n"]
    probs = {name: run(eval_texts) for name, run in runners.items()}
    fp32_top1, int8_top1 = probs["torch_fp32"].argmax(axis=1), probs["onnx_int8"].argmax(axis=1)
    fields["onnx_fp32_max_abs_prob_diff"] = float(np.abs(probs["torch_fp32"] - probs["onnx_fp32"]).max())
    fields["top1_agreement"] = float(np.mean(fp32_top1 == int8_top1))
    if eval_labels is not None:
        label_ids = np.array([labels.index(label) for label in eval_labels])
        fields["accuracy_fp32"] = float(np.mean(fp32_top1 == label_ids))
        fields["accuracy_int8"] = float(np.mean(int8_top1 == label_ids))
        fields["accuracy_delta"] = fields["accuracy_int8"] - fields["accuracy_fp32"]
    return fields

