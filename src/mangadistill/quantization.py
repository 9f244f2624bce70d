"""CPU / mobile int8 for a trained text classifier: ONNX export, dynamic int8 with ONNX Runtime, a runner.

Export uses torch's dynamo exporter (`torch.onnx.export(dynamo=True)`, the torch 2.13 default) with a
dynamic batch and sequence axis; its optimised graph is about half the nodes of the TorchScript exporter's.
It builds opset 18 and converts down to the requested opset (17 by default, for older mobile runtimes).
Int8 is `onnxruntime.quantization.quantize_dynamic` with QInt8 weights on MatMul (Gemm is rewritten to
MatMul by the quantizer) and Gather: quantizing the embedding Gather matters because the word embedding is
most of a small BERT's weights (MiniLM-L6: 11.7M of 22.7M parameters). Activations are quantized at run time.
"""

from __future__ import annotations

import glob
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from mangadistill.benchmarking import measure_latency, path_size_mb, torch_threads

INT8_FILENAME = "model.int8.onnx"
REPORT_FILENAME = "quantization_report.json"
LATENCY_MAX_ITEMS = 100
OPSET = 17
# Model inputs the exported graph may take, in the order of its positional inputs.
_CANDIDATE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_TRACE_TEXT = "where is my order of the new one piece volume"
# Report fields that need eval_texts (accuracy_* also need eval_labels); None without them.
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


def read_labels(folder: str) -> list[str]:
    """Label names from `folder`/config.json `id2label`, ordered by id (ids must be 0..n-1)."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path} not found: a classifier folder needs its config.json")
    with open(config_path, encoding="utf-8") as handle:
        id2label = json.load(handle).get("id2label")
    if not id2label:
        raise ValueError(f"{config_path} has no id2label: cannot name the classifier's outputs")
    by_id = {int(label_id): name for label_id, name in id2label.items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"{config_path}: id2label ids must be 0..{len(by_id) - 1}, got {sorted(by_id)}")
    return [by_id[label_id] for label_id in range(len(by_id))]


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, exp(x - max) / sum(exp(x - max))."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _load_fp32_classifier(model_dir: str) -> torch.nn.Module:
    """The sequence classifier in float32 eval mode, whatever dtype it was saved in."""
    return AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()


class _LogitsOnly(torch.nn.Module):
    """Positional inputs (in `input_names` order) to the classifier's logits: the graph ONNX exports."""

    def __init__(self, classifier: torch.nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.classifier = classifier
        self.input_names = list(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.classifier(**dict(zip(self.input_names, inputs, strict=True))).logits


def _export_loaded(
    classifier: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    onnx_path: str,
    max_length: int,
    opset: int,
) -> str:
    """Export `classifier` to one self-contained .onnx file with dynamic batch and sequence axes."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    # Batch 2 and a padded length keep torch.export from specialising either axis to 1.
    encoded = tokenizer(
        [_TRACE_TEXT] * 2, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    forward_parameters = inspect.signature(classifier.forward).parameters
    input_names = [name for name in _CANDIDATE_INPUTS if name in encoded and name in forward_parameters]
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    os.makedirs(os.path.dirname(os.path.abspath(onnx_path)), exist_ok=True)
    torch.onnx.export(
        _LogitsOnly(classifier, input_names).eval(),
        tuple(encoded[name] for name in input_names),
        onnx_path,
        input_names=input_names,
        output_names=["logits"],
        dynamic_shapes=(tuple({0: batch, 1: sequence} for _ in input_names),),
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return onnx_path


def export_onnx(model_dir: str, onnx_path: str, max_length: int = 64, opset: int = OPSET) -> str:
    """Export the classifier in `model_dir` to `onnx_path` (fp32, logits output); returns `onnx_path`.

    Graph inputs: input_ids, attention_mask and token_type_ids where the tokenizer and model use them,
    int64 of shape (batch, sequence); output `logits` of shape (batch, num_labels).
    """
    read_labels(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return _export_loaded(_load_fp32_classifier(model_dir), tokenizer, onnx_path, max_length, opset)


def quantize_int8(onnx_path: str, int8_path: str) -> str:
    """Dynamic int8 (QInt8 weights) of MatMul/Gemm and Gather (embeddings) of `onnx_path`; returns int8_path.

    The exporter's value_info is dropped first: it records initializer shapes, and the quantizer's
    Gemm -> MatMul rewrite transposes those initializers, so stale entries fail its shape inference.
    """
    model = onnx.load(onnx_path)
    del model.graph.value_info[:]
    os.makedirs(os.path.dirname(os.path.abspath(int8_path)), exist_ok=True)
    quantize_dynamic(
        model, int8_path, op_types_to_quantize=["MatMul", "Gather"], weight_type=QuantType.QInt8
    )
    return int8_path


def cpu_session(onnx_path: str, threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU provider; `threads` intra-op threads (and one inter-op) when given."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])


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
            chunks.append(_softmax(self.session.run(None, feeds)[0]))
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


def _safetensors_size_mb(model_dir: str) -> float:
    """Total MiB of the *.safetensors weight files in `model_dir`."""
    weight_files = glob.glob(os.path.join(model_dir, "*.safetensors"))
    if not weight_files:
        raise FileNotFoundError(f"{model_dir} has no *.safetensors weights")
    return sum(path_size_mb(path) for path in weight_files)


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
    classifier = _load_fp32_classifier(model_dir)
    int8_path = os.path.join(output_dir, INT8_FILENAME)
    report: dict = {
        "model_dir": model_dir,
        "int8_model": INT8_FILENAME,
        "labels": labels,
        "max_length": max_length,
        "threads": threads,
        "n_eval": 0 if eval_texts is None else len(eval_texts),
        "fp32_torch_size_mb": _safetensors_size_mb(model_dir),
    }
    with tempfile.TemporaryDirectory(prefix="mangadistill-onnx-") as scratch:
        fp32_path = os.path.join(scratch, "model.onnx")
        _export_loaded(classifier, tokenizer, fp32_path, max_length, OPSET)
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
