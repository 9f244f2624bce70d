"""response_distillation_training alone with kfp.local: a tiny chat llama learns the curated answers with LoRA
for two steps; a repeated prompt_id is quarantined."""

from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama
from kfp import dsl, local
from kfp.dsl import Dataset, Metrics, Model

from mangadistill.core import storage
from mangadistill.response.contracts import RESPONSE_EXAMPLES
from mangadistill_components.response.distillation_training import response_distillation_training


class TrainingOutputs(NamedTuple):
    model: Model
    quarantine: Dataset
    metrics: Metrics


@dsl.pipeline(name="response-distillation-training-alone")
def training_alone(examples_uri: str, student: str) -> TrainingOutputs:
    examples = dsl.importer(artifact_uri=examples_uri, artifact_class=dsl.Dataset).output
    task = response_distillation_training(training_examples=examples, student_model=student, max_steps=2,
                                          batch_size=3, max_length=64, lora_r=4)
    return TrainingOutputs(task.outputs["model"], task.outputs["quarantine"], task.outputs["metrics"])


def test_a_tiny_student_trains_with_lora_and_is_saved_merged(tmp_path):
    rows = [{"prompt_id": f"p{i}", "prompt": prompt, "response": response, "source": "teacher",
             "provenance": "teacher:test", "category": None}
            for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True))]
    rows.append({**rows[0], "response": "a second answer under the same prompt_id"})
    examples_uri = str(tmp_path / "train.parquet")
    storage.write_table(pa.Table.from_pylist(rows, schema=RESPONSE_EXAMPLES), examples_uri)
    tokenizer = build_chat_tokenizer(PROMPTS + RESPONSES + ["system user assistant MangaAssist"], vocab_size=300)
    student = build_tiny_llama(tmp_path / "student", tokenizer, layers=2, hidden=32, intermediate=64)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = training_alone(examples_uri=examples_uri, student=str(student))

    folder = Path(run.outputs["model"].path)
    assert (folder / "merged" / "config.json").is_file() and (folder / "training_report.json").is_file()
    assert any((folder / "adapter").glob("adapter_model.*"))
    quarantine = storage.read_table(run.outputs["quarantine"].path).to_pylist()
    assert [row["reason"] for row in quarantine] == ["duplicate prompt_id"]
    metrics = run.outputs["metrics"].metadata
    assert metrics["steps"] == 2 and metrics["train_rows"] == len(PROMPTS) and metrics["quarantined_rows"] == 1
    assert metrics["final_loss"] > 0 and 0 < metrics["trainable_parameters"] < metrics["parameters"]
