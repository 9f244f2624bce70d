"""intent_distillation_training alone under kfp.local: a classifier folder from soft labels, bad rows quarantined."""

import json
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
from kfp import dsl, local

from mangadistill.core import storage
from mangadistill.intent.labels import INTENTS
from mangadistill_components.intent.distillation_training import intent_distillation_training


class Outputs(NamedTuple):
    model: dsl.Model
    quarantine: dsl.Dataset
    metrics: dsl.Metrics


def test_trains_a_classifier_on_soft_labels_and_quarantines_bad_rows(tmp_path, tiny_encoder):
    k = len(INTENTS)
    rows = [{"message_id": f"m{i}", "text": f"message number {i}",
             "soft_label": [0.5 if j in (i % k, (i + 1) % k) else 0.0 for j in range(k)],
             "hard_label": INTENTS[i % k], "entropy": 0.3, "members": ["classifier"], "members_agree": True}
            for i in range(16)]
    rows[5]["soft_label"] = [0.3] * k
    storage.write_table(pa.Table.from_pylist(rows), str(tmp_path / "soft.parquet"))

    @dsl.pipeline(name="intent-distillation-training-alone")
    def training_alone(soft_labels_uri: str, student_model: str) -> Outputs:
        imported = dsl.importer(artifact_uri=soft_labels_uri, artifact_class=dsl.Dataset)
        task = intent_distillation_training(soft_labels=imported.output, student_model=student_model, epochs=1,
                                            batch_size=8, beta=0.3)
        return Outputs(task.outputs["model"], task.outputs["quarantine"], task.outputs["metrics"])

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = training_alone(soft_labels_uri=str(tmp_path / "soft.parquet"), student_model=str(tiny_encoder))

    model = Path(run.outputs["model"].path)
    config = json.loads((model / "config.json").read_text())
    assert list(config["id2label"].values()) == list(INTENTS)
    assert json.loads((model / "training_report.json").read_text())["config"]["beta"] == 0.3
    quarantine = storage.read_table(run.outputs["quarantine"].path).to_pylist()
    assert [row["row"] for row in quarantine] == [5] and "sum to" in quarantine[0]["reason"]
    metrics = run.outputs["metrics"].metadata
    assert metrics["train_rows"] == 15 and metrics["quarantined_rows"] == 1 and metrics["final_loss"] > 0
