"""reranker_quantization alone with kfp.local: a tiny cross-encoder to int8 ONNX, scores compared on eval pairs."""

import json
from pathlib import Path
from typing import NamedTuple

import onnxruntime as ort
from kfp import dsl, local
from kfp.dsl import Metrics, Model

from conftest import build_tiny_bert
from mangadistill.core import storage
from mangadistill.sample_data.queries import build_reranker_splits
from mangadistill_components.reranker.quantization import reranker_quantization


class QuantizationOutputs(NamedTuple):
    quantized: Model
    metrics: Metrics


@dsl.pipeline(name="reranker-quantization-alone")
def quantization_alone(model_uri: str, eval_uri: str) -> QuantizationOutputs:
    model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model).output
    eval_candidates = dsl.importer(artifact_uri=eval_uri, artifact_class=dsl.Dataset).output
    task = reranker_quantization(model=model, eval_candidates=eval_candidates, max_length=48, sample_pairs=6)
    return QuantizationOutputs(task.outputs["quantized"], task.outputs["metrics"])


def test_cross_encoder_becomes_a_one_logit_int8_onnx_model_close_to_fp32(tmp_path):
    splits = build_reranker_splits(seed=5, n_train=2, n_production=2, n_eval=2, k=5)
    storage.write_table(splits["eval_candidates"], str(tmp_path / "eval.parquet"))
    model = build_tiny_bert(tmp_path / "cross-encoder", labels=("relevance",), layers=1, seed=3)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = quantization_alone(model_uri=str(model), eval_uri=str(tmp_path / "eval.parquet"))

    quantized = Path(run.outputs["quantized"].path)
    session = ort.InferenceSession(str(quantized / "model.int8.onnx"))
    assert session.get_outputs()[0].shape[-1] == 1
    assert (quantized / "config.json").exists() and (quantized / "tokenizer.json").exists()
    report = json.loads((quantized / "quantization_report.json").read_text())
    assert report["max_length"] == 48 and report["score"] == "sigmoid(logit)"
    metrics = run.outputs["metrics"].metadata
    assert metrics["size_ratio"] > 1.0 and metrics["size_ratio"] == report["size_ratio"]
    assert 0.0 <= metrics["mean_abs_score_diff"] <= metrics["max_abs_score_diff"] < 0.2
