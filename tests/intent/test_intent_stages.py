"""Stage functions: file-level contracts, clear errors on bad input, quarantine with reasons."""

import json

import pyarrow as pa
import pytest

from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError
from mangadistill.intent.ensemble import EnsembleConfig
from mangadistill.intent.labeling import LabelingConfig
from mangadistill.intent.labels import INTENTS
from mangadistill.intent.stages import run_distillation_training, run_soft_label_ensemble, run_teacher_labeling
from mangadistill.intent.training import TrainConfig

K = len(INTENTS)


def _one_hot(k: int) -> list[float]:
    return [1.0 if j == k else 0.0 for j in range(K)]


def test_labeling_quarantines_bad_rows_and_names_them(tmp_path, tiny_intent_classifier):
    log = tmp_path / "log.jsonl"
    rows = [{"message_id": f"m{i}", "text": f"where is order {i}"} for i in range(10)]
    rows[3]["text"] = "   "
    rows[7]["message_id"] = "m1"
    log.write_text("\n".join(json.dumps(r) for r in rows))
    metrics = run_teacher_labeling(str(log), str(tmp_path / "votes"), str(tmp_path / "q"),
                                   LabelingConfig(str(tiny_intent_classifier), adjudicator="none"))
    quarantine = storage.read_table(str(tmp_path / "q"))
    assert sorted(zip(quarantine.column("row").to_pylist(), quarantine.column("reason").to_pylist(), strict=True)) \
        == [(3, "empty text"), (7, "duplicate message_id")]
    assert quarantine.column("source").to_pylist() == [str(log)] * 2
    assert metrics["quarantined_rows"] == 2 and metrics["quarantined_empty_text"] == 1
    assert storage.read_table(str(tmp_path / "votes")).num_rows == 8


def test_labeling_missing_column_is_a_clear_error(tmp_path, tiny_intent_classifier):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"message_id": "a", "body": "hello"}))
    with pytest.raises(DataContractError) as err:
        run_teacher_labeling(str(log), str(tmp_path / "v"), str(tmp_path / "q"),
                             LabelingConfig(str(tiny_intent_classifier), adjudicator="none"))
    assert str(log) in str(err.value) and "'text'" in str(err.value)


def test_unreadable_file_is_a_clear_error(tmp_path, tiny_intent_classifier):
    bad = tmp_path / "log.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(storage.StorageError, match=r"log\.parquet"):
        run_teacher_labeling(str(bad), str(tmp_path / "v"), str(tmp_path / "q"),
                             LabelingConfig(str(tiny_intent_classifier), adjudicator="none"))


def _soft_rows(n: int) -> list[dict]:
    return [{"message_id": f"m{i}", "text": f"message number {i}", "soft_label": _one_hot(i % K),
             "hard_label": INTENTS[i % K], "entropy": 0.0, "members": ["classifier"], "members_agree": True}
            for i in range(n)]


def test_training_quarantines_soft_labels_that_do_not_sum_to_one(tmp_path, tiny_encoder):
    rows = _soft_rows(16)
    rows[5]["soft_label"] = [0.3] * K
    storage.write_table(pa.Table.from_pylist(rows), str(tmp_path / "soft.parquet"))
    metrics = run_distillation_training(str(tmp_path / "soft.parquet"), str(tiny_encoder), str(tmp_path / "student"),
                                        str(tmp_path / "q"), TrainConfig(epochs=1, batch_size=8))
    assert metrics["train_rows"] == 15 and metrics["quarantined_rows"] == 1
    reason = storage.read_table(str(tmp_path / "q")).column("reason")[0].as_py()
    assert "sum to" in reason
    with pytest.raises(DataContractError) as err:
        run_distillation_training(str(tmp_path / "soft.parquet"), str(tiny_encoder), str(tmp_path / "s2"),
                                  str(tmp_path / "q2"), TrainConfig(epochs=1), on_bad_rows="fail")
    assert (err.value.column, err.value.row) == ("soft_label", 5)


def test_ensemble_stage_writes_report_and_loggable_metrics(tmp_path):
    votes = [{"message_id": f"m{i}", "text": "t", "classifier_probs": _one_hot(i % K), "rule_intent": None,
              "rule_ids": [], "adjudicator_probs": None, "members": ["classifier"], "classifier_margin": 1.0,
              "classifier_entropy": 0.0} for i in range(8)]
    votes[2]["classifier_probs"] = [float("nan")] * K
    storage.write_table(pa.Table.from_pylist(votes), str(tmp_path / "votes.parquet"))
    metrics = run_soft_label_ensemble(str(tmp_path / "votes.parquet"), str(tmp_path / "soft"),
                                      str(tmp_path / "report.json"), str(tmp_path / "q"), EnsembleConfig())
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rows"] == 7 and report["quarantined_rows"] == 1
    assert all(isinstance(v, float) and v == v for v in metrics.values())  # no NaN reaches KFP Metrics
    assert "classifier_vs_adjudicator_agree_rate" not in metrics  # NaN without adjudicator rows
