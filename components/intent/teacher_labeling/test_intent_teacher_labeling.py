"""intent_teacher_labeling alone under kfp.local: the members vote on every good message, bad ones are quarantined."""

import json
from typing import NamedTuple

from kfp import dsl, local

from mangadistill.core import storage
from mangadistill_components.intent.teacher_labeling import intent_teacher_labeling


class Outputs(NamedTuple):
    member_votes: dsl.Dataset
    quarantine: dsl.Dataset
    metrics: dsl.Metrics


def test_votes_on_every_good_message_and_quarantines_the_rest(tmp_path, tiny_intent_classifier):
    messages = tmp_path / "messages.jsonl"
    rows = [{"message_id": f"m{i}", "text": f"where is order {i}", "channel": "app"} for i in range(10)]
    rows[3]["text"] = "   "
    rows[7]["message_id"] = "m1"
    messages.write_text("\n".join(json.dumps(row) for row in rows))

    @dsl.pipeline(name="intent-teacher-labeling-alone")
    def labeling_alone(messages_uri: str, teacher: str) -> Outputs:
        imported = dsl.importer(artifact_uri=messages_uri, artifact_class=dsl.Dataset)
        task = intent_teacher_labeling(messages=imported.output, teacher_model=teacher, adjudicator="none")
        return Outputs(task.outputs["member_votes"], task.outputs["quarantine"], task.outputs["metrics"])

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = labeling_alone(messages_uri=str(messages), teacher=str(tiny_intent_classifier))

    votes = storage.read_table(run.outputs["member_votes"].path)
    assert votes.num_rows == 8 and votes.column("members")[0].as_py() == ["classifier"]
    quarantine = storage.read_table(run.outputs["quarantine"].path).to_pylist()
    assert sorted((row["row"], row["reason"]) for row in quarantine) == [(3, "empty text"),
                                                                         (7, "duplicate message_id")]
    metrics = run.outputs["metrics"].metadata
    assert metrics["rows"] == 8 and metrics["quarantined_rows"] == 2 and metrics["adjudicated_rows"] == 0
