"""intent_quantization alone under kfp.local: an int8 ONNX folder and its before/after figures."""

import json
from pathlib import Path
from typing import NamedTuple

import onnxruntime as ort
from kfp import dsl, local

from mangadistill.core import storage
from mangadistill.sample_data.messages import build_sample_splits
from mangadistill_components.intent.quantization import intent_quantization


class Outputs(NamedTuple):
    quantized: dsl.Model
    metrics: dsl.Metrics


def test_writes_an_int8_onnx_folder_and_measures_it(tmp_path, tiny_intent_classifier):
    storage.write_table(build_sample_splits(seed=5, n_labelled=10, n_production=10, n_eval=40)["eval"],
                        str(tmp_path / "eval.parquet"))

    @dsl.pipeline(name="intent-quantization-alone")
    def quantization_alone(model_uri: str, eval_uri: str) -> Outputs:
        model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
        eval_set = dsl.importer(artifact_uri=eval_uri, artifact_class=dsl.Dataset)
        task = intent_quantization(model=model.output, eval_set=eval_set.output, max_length=32)
        return Outputs(task.outputs["quantized"], task.outputs["metrics"])

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = quantization_alone(model_uri=str(tiny_intent_classifier), eval_uri=str(tmp_path / "eval.parquet"))

    quantized = Path(run.outputs["quantized"].path)
    session = ort.InferenceSession(str(quantized / "model.int8.onnx"))
    assert {i.name for i in session.get_inputs()} >= {"input_ids", "attention_mask"}
    report = json.loads((quantized / "quantization_report.json").read_text())
    assert report["n_eval"] == 40 and report["max_length"] == 32
    metrics = run.outputs["metrics"].metadata
    assert metrics["size_ratio"] > 1.0 and -1.0 <= metrics["accuracy_delta"] <= 1.0
    assert "model_dir" not in metrics  # only numbers reach the Metrics artifact
