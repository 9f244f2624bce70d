"""response_quantization alone with kfp.local: a tiny chat llama is quantized to bitsandbytes 8-bit and NF4,
both smaller than the unquantized model, with their generation throughput measured on eval prompts."""

import json
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama
from kfp import dsl, local
from kfp.dsl import Metrics, Model

from mangadistill.core import storage
from mangadistill.response.contracts import RESPONSE_EVAL
from mangadistill.response.quantization import REPORT_FILE
from mangadistill.sample_data.responses import response_eval_set
from mangadistill_components.response.quantization import response_quantization


class QuantizationOutputs(NamedTuple):
    quantized: Model
    metrics: Metrics


@dsl.pipeline(name="response-quantization-alone")
def quantization_alone(model_uri: str, eval_uri: str) -> QuantizationOutputs:
    task = response_quantization(
        model=dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model).output,
        eval_set=dsl.importer(artifact_uri=eval_uri, artifact_class=dsl.Dataset).output,
        generation_prompts=1, max_new_tokens=3,
    )
    return QuantizationOutputs(task.outputs["quantized"], task.outputs["metrics"])


def test_int8_and_nf4_are_smaller_and_measured(tmp_path):
    tokenizer = build_chat_tokenizer(PROMPTS + RESPONSES, vocab_size=300)
    student = build_tiny_llama(tmp_path / "student", tokenizer, layers=2, hidden=64, intermediate=256,
                               max_positions=1024)
    eval_uri = str(tmp_path / "eval.parquet")
    storage.write_table(pa.Table.from_pylist(response_eval_set(per_slice=1), schema=RESPONSE_EVAL), eval_uri)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = quantization_alone(model_uri=str(student), eval_uri=eval_uri)

    folder = Path(run.outputs["quantized"].path)
    report = json.loads((folder / REPORT_FILE).read_text())
    assert set(report["models"]) == {"baseline", "int8", "nf4"}
    assert (folder / "int8" / "config.json").is_file() and (folder / "nf4" / "config.json").is_file()
    metrics = run.outputs["metrics"].metadata
    assert metrics["nf4_size_on_disk_ratio"] < metrics["int8_size_on_disk_ratio"] < 1
    assert metrics["baseline_tokens_per_second"] == report["models"]["baseline"]["tokens_per_second"] > 0
