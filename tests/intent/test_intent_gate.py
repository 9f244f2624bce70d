"""The intent gate: teacher quality from what labeling recorded, students measured on human labels."""

import json
from pathlib import Path

import numpy as np
import pytest

from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError
from mangadistill.intent import metrics as m
from mangadistill.intent.ensemble import EnsembleConfig
from mangadistill.intent.gate import run_intent_gate
from mangadistill.intent.labeling import LabelingConfig
from mangadistill.intent.labels import INTENT_INDEX
from mangadistill.intent.stages import run_quantization, run_soft_label_ensemble, run_teacher_labeling
from mangadistill.sample_data.messages import build_sample_splits


@pytest.fixture(scope="module")
def gate_inputs(tmp_path_factory, tiny_intent_classifier) -> dict[str, str]:
    root = tmp_path_factory.mktemp("gate")
    eval_table = build_sample_splits(seed=5, n_labelled=10, n_production=10, n_eval=160)["eval"]
    paths = {name: str(root / name) for name in ("eval.parquet", "votes", "soft", "int8", "report.html")}
    storage.write_table(eval_table, paths["eval.parquet"])
    run_teacher_labeling(paths["eval.parquet"], paths["votes"], str(root / "q1"),
                         LabelingConfig(str(tiny_intent_classifier), adjudicator="none"))
    run_soft_label_ensemble(paths["votes"], paths["soft"], str(root / "ens.json"), str(root / "q2"), EnsembleConfig())
    paths["student"] = str(tiny_intent_classifier)  # the same untrained tiny model plays every part
    run_quantization(paths["student"], paths["int8"], paths["eval.parquet"])
    return paths


def _run(paths: dict[str, str], tmp_path: Path, teacher: str, votes: str | None = None):
    return run_intent_gate(
        paths["eval.parquet"], paths["soft"], votes or paths["votes"], paths["student"], paths["student"],
        paths["int8"], teacher, str(tmp_path / "report.html"), str(tmp_path / "event.json"),
    )


def test_teacher_quality_comes_from_the_recorded_votes(gate_inputs, tiny_intent_classifier, tmp_path):
    outcome = _run(gate_inputs, tmp_path, str(tiny_intent_classifier))
    eval_table = storage.read_table(gate_inputs["eval.parquet"])
    votes = storage.read_table(gate_inputs["votes"])
    by_id = dict(zip(votes.column("message_id").to_pylist(), votes.column("classifier_probs").to_pylist(),
                     strict=True))
    probs = np.array([by_id[i] for i in eval_table.column("message_id").to_pylist()])
    y = np.array([INTENT_INDEX[label] for label in eval_table.column("label").to_pylist()])
    assert outcome.metrics["teacher_classifier_accuracy"] == pytest.approx(m.accuracy(y, probs.argmax(axis=1)))
    assert outcome.metrics["eval_rows"] == eval_table.num_rows
    # the baseline is the student itself here, so no rare class can be worse than it
    assert outcome.metrics["rare_recall_vs_baseline_min"] == 0.0
    assert outcome.metrics["teacher_classifier_latency_p50_ms"] > 0
    event = json.loads((tmp_path / "event.json").read_text())
    assert event["promote"] is outcome.promote is False  # untrained tiny models fail the accuracy gates
    assert "reliability" in (tmp_path / "report.html").read_text().lower()


def test_eval_rows_missing_from_the_votes_are_a_clear_error(gate_inputs, tiny_intent_classifier, tmp_path):
    votes = storage.read_table(gate_inputs["votes"])
    partial = str(tmp_path / "partial-votes.parquet")
    storage.write_table(votes.slice(1), partial)
    with pytest.raises(DataContractError) as err:
        _run(gate_inputs, tmp_path, str(tiny_intent_classifier), votes=partial)
    first_id = votes.column("message_id")[0].as_py()
    assert partial in str(err.value) and first_id in str(err.value)
