"""ONNX export and CPU int8 for a sequence-classification folder (an intent classifier, a one-logit cross-encoder).

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
from collections.abc import Sequence

import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from mangadistill.core.benchmarking import path_size_mb

INT8_FILENAME = "model.int8.onnx"
ONNX_INT8_TARGET = "onnx/model_qint8_dynamic.onnx"
"""Where a published model folder keeps the int8 model (the `onnx/model_qint8_*.onnx` layout that
sentence-transformers' ONNX backend and Optimum's ORT classes look in)."""
REPORT_FILENAME = "quantization_report.json"
OPSET = 17
_CANDIDATE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_TRACE_TEXT = "where is my order of the new one piece volume"


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


def load_fp32_classifier(model_dir: str) -> torch.nn.Module:
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


def export_loaded(
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
    return export_loaded(load_fp32_classifier(model_dir), tokenizer, onnx_path, max_length, opset)


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


def safetensors_size_mb(model_dir: str) -> float:
    """Total MiB of the *.safetensors weight files in `model_dir`."""
    weight_files = glob.glob(os.path.join(model_dir, "*.safetensors"))
    if not weight_files:
        raise FileNotFoundError(f"{model_dir} has no *.safetensors weights")
    return sum(path_size_mb(path) for path in weight_files)

