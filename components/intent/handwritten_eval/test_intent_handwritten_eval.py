"""intent_handwritten_eval alone under kfp.local: the packaged set by default, a user's file validated with
its bad rows quarantined."""

import json
from collections import Counter
from typing import NamedTuple

from kfp import dsl, local

from mangadistill.core import storage
from mangadistill.intent.labels import INTENTS
from mangadistill_components.intent.handwritten_eval import intent_handwritten_eval


class Outputs(NamedTuple):
    packaged: dsl.Dataset
    packaged_metrics: dsl.Metrics
    users: dsl.Dataset
    users_quarantine: dsl.Dataset
    users_metrics: dsl.Metrics


def test_packaged_set_by_default_and_a_users_file_validated(tmp_path):
    users_file = tmp_path / "my_eval.jsonl"
    rows = [{"message_id": f"u{i}", "text": f"where is order {i}", "label": "order_tracking"} for i in range(20)]
    rows[1]["also_plausible"] = "escalation"
    rows[2]["label"] = "complaint"  # not an intent
    rows[4]["text"] = "  "
    rows[6]["message_id"] = "u0"
    rows[8]["also_plausible"] = "order_tracking"  # the label itself: not a second plausible intent
    users_file.write_text("\n".join(json.dumps(row) for row in rows))

    @dsl.pipeline(name="intent-handwritten-eval-alone")
    def handwritten_alone(users_uri: str) -> Outputs:
        packaged = intent_handwritten_eval()
        users = intent_handwritten_eval(uri=users_uri)
        return Outputs(packaged.outputs["handwritten_set"], packaged.outputs["metrics"],
                       users.outputs["handwritten_set"], users.outputs["quarantine"], users.outputs["metrics"])

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = handwritten_alone(users_uri=str(users_file))

    packaged = storage.read_table(run.outputs["packaged"].path)
    assert packaged.column_names == ["message_id", "text", "label", "also_plausible"]
    assert packaged.num_rows == 104 and set(packaged.column("label").to_pylist()) == set(INTENTS)
    also = packaged.column("also_plausible").to_pylist()
    assert sum(alt is not None for alt in also) == 27
    assert all(alt != label for alt, label in zip(also, packaged.column("label").to_pylist(), strict=True))
    assert run.outputs["packaged_metrics"].metadata["ambiguous_rows"] == 27
    assert run.outputs["packaged_metrics"].metadata["quarantined_rows"] == 0

    users = storage.read_table(run.outputs["users"].path)
    kept = [i for i in range(20) if i not in (2, 4, 6)]
    assert users.column("message_id").to_pylist() == [f"u{i}" for i in kept]
    assert users.column("also_plausible").to_pylist() == [None, "escalation"] + [None] * 15  # u8's is cleared
    quarantine = storage.read_table(run.outputs["users_quarantine"].path).to_pylist()
    assert Counter((row["row"], row["reason"]) for row in quarantine) == Counter(
        [(2, "unknown intent label"), (4, "empty text"), (6, "duplicate message_id")])
    metrics = run.outputs["users_metrics"].metadata
    assert metrics["rows"] == 17 and metrics["ambiguous_rows"] == 1 and metrics["also_plausible_cleared"] == 1
    assert metrics["quarantined_rows"] == 3
