"""intent_soft_label_ensemble alone under kfp.local: member votes -> soft labels, a report, NaN votes quarantined."""

import json
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
from kfp import dsl, local

from mangadistill.core import storage
from mangadistill.intent.contracts import SOFT_LABELS
from mangadistill.intent.labels import INTENTS
from mangadistill_components.intent.soft_label_ensemble import intent_soft_label_ensemble


class Outputs(NamedTuple):
    soft_labels: dsl.Dataset
    report: dsl.Dataset
    quarantine: dsl.Dataset
    metrics: dsl.Metrics


def test_soft_labels_sum_to_one_and_nan_votes_are_quarantined(tmp_path):
    one_hot = [[1.0 if j == i % len(INTENTS) else 0.0 for j in range(len(INTENTS))] for i in range(8)]
    votes = [{"message_id": f"m{i}", "text": f"message {i}", "classifier_probs": one_hot[i], "rule_intent": None,
              "rule_ids": [], "adjudicator_probs": None, "members": ["classifier"], "classifier_margin": 1.0,
              "classifier_entropy": 0.0} for i in range(8)]
    votes[2]["classifier_probs"] = [float("nan")] * len(INTENTS)
    storage.write_table(pa.Table.from_pylist(votes), str(tmp_path / "votes.parquet"))

    @dsl.pipeline(name="intent-soft-label-ensemble-alone")
    def ensemble_alone(votes_uri: str) -> Outputs:
        imported = dsl.importer(artifact_uri=votes_uri, artifact_class=dsl.Dataset)
        task = intent_soft_label_ensemble(member_votes=imported.output, temperature=2.0)
        return Outputs(task.outputs["soft_labels"], task.outputs["report"], task.outputs["quarantine"],
                       task.outputs["metrics"])

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = ensemble_alone(votes_uri=str(tmp_path / "votes.parquet"))

    soft = storage.read_table(run.outputs["soft_labels"].path)
    assert soft.schema.equals(SOFT_LABELS, check_metadata=False) and soft.num_rows == 7
    assert all(abs(sum(p) - 1.0) < 1e-5 and max(p) < 1.0 for p in soft.column("soft_label").to_pylist())  # T = 2
    assert storage.read_table(run.outputs["quarantine"].path).column("row").to_pylist() == [2]
    report = json.loads(Path(run.outputs["report"].path).read_text())
    assert report["config"]["temperature"] == 2.0 and report["rows"] == 7
    assert run.outputs["metrics"].metadata["quarantined_rows"] == 1
