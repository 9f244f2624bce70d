"""A store's own intent label set: read from YAML or the teacher's id2label, carried by the data from teacher
labeling through the ensemble to the trained student; the built-in eight stay the default."""

import json

import numpy as np
import pyarrow as pa
import pytest

from conftest import build_tiny_bert
from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.intent.adjudicator import adjudicator_prompt, parse_adjudication
from mangadistill.intent.contracts import LABELLED_MESSAGES, MEMBER_VOTES, SOFT_LABELS, intent_contract
from mangadistill.intent.ensemble import EnsembleConfig
from mangadistill.intent.labeling import LabelingConfig
from mangadistill.intent.labels import (
    BUILTIN_LABELS,
    INTENTS,
    RARE_INTENTS,
    TEACHER_ID2LABEL,
    LabelSetError,
    label_set_from_metadata,
    load_label_set,
)
from mangadistill.intent.rules import RulesError, load_rules
from mangadistill.intent.stages import run_distillation_training, run_soft_label_ensemble, run_teacher_labeling
from mangadistill.intent.training import TrainConfig

STORE_LABELS = """\
intents:
  - name: order_status
    definition: asks where an order is.
  - name: refund
  - name: fraud_report
    definition: reports a card or account used without permission.
    rare: true
"""


@pytest.fixture
def labels_file(tmp_path) -> str:
    path = tmp_path / "labels.yaml"
    path.write_text(STORE_LABELS)
    return str(path)


def test_empty_labels_uri_is_the_built_in_eight():
    labels = load_label_set("")
    assert labels is BUILTIN_LABELS and labels.names == INTENTS and labels.rare == RARE_INTENTS


def test_a_yaml_label_set_keeps_order_rare_and_definitions(labels_file):
    labels = load_label_set(labels_file)
    assert labels.names == ("order_status", "refund", "fraud_report") and labels.rare == ("fraud_report",)
    assert labels.definition("order_status") == "asks where an order is."
    assert labels.definition("refund") == "has the intent 'refund'."  # no definition given
    assert label_set_from_metadata(labels.metadata()) == labels  # what a table carries comes back whole


@pytest.mark.parametrize(("text", "problem"), [
    ("intents: [a]", "needs at least 2 intents"),
    ("intents: [a, a]", "repeated intents ['a']"),
    ("intents: [a, 'b c']", "letters, digits"),
    ("intents: [a, {name: b, rare: true, colour: red}]", "unknown keys ['colour']"),
    ("labels: [a, b]", "expected a mapping with an 'intents' list"),
])
def test_a_bad_label_file_names_the_file_and_the_problem(tmp_path, text, problem):
    path = tmp_path / "labels.yaml"
    path.write_text(text)
    with pytest.raises(LabelSetError) as err:
        load_label_set(str(path))
    assert str(path) in str(err.value) and problem in str(err.value)


def test_the_teachers_id2label_is_a_label_set_in_id_order(tmp_path):
    teacher = build_tiny_bert(tmp_path / "teacher", labels=("refund", "escalation", "order_status"))
    labels = load_label_set(TEACHER_ID2LABEL, str(teacher))
    assert labels.names == ("refund", "escalation", "order_status")
    assert labels.rare == ("escalation",)  # the built-in rare intent it shares
    with pytest.raises(LabelSetError, match="needs the teacher's folder"):
        load_label_set(TEACHER_ID2LABEL, str(tmp_path / "nowhere"))


def test_a_contract_for_another_label_set_checks_its_names_and_vector_length(labels_file):
    labels = load_label_set(labels_file)
    rows = [{"message_id": "1", "text": "my refund?", "label": "refund"},
            {"message_id": "2", "text": "where is it", "label": "order_tracking"}]  # a built-in name, not theirs
    checked = validate_table(pa.Table.from_pylist(rows), intent_contract(LABELLED_MESSAGES, labels), "eval.csv",
                             max_bad_fraction=1.0)
    assert checked.table.column("label").to_pylist() == ["refund"]
    assert checked.quarantine.column("reason").to_pylist() == ["unknown intent label"]
    assert label_set_from_metadata(checked.table.schema.metadata) == labels  # the set travels with the table
    builtin = validate_table(pa.Table.from_pylist(rows), LABELLED_MESSAGES, "eval.csv", max_bad_fraction=1.0)
    assert builtin.table.column("label").to_pylist() == ["order_tracking"]  # the default contract is unchanged
    soft = intent_contract(SOFT_LABELS, labels)
    bad = [{"message_id": "1", "text": "x", "soft_label": [0.5, 0.5], "hard_label": "refund", "entropy": 0.5,
            "members": ["classifier"], "members_agree": True}]
    reasons = validate_table(pa.Table.from_pylist(bad), soft, "s", max_bad_fraction=1.0).quarantine
    assert reasons.column("reason").to_pylist() == ["expected 3 probabilities, got 2"]


def test_the_adjudicator_asks_about_and_answers_in_the_label_set(labels_file):
    labels = load_label_set(labels_file)
    prompt = adjudicator_prompt(labels)
    assert "- fraud_report: the customer reports a card or account used without permission." in prompt
    assert "recommendation" not in prompt
    probs = parse_adjudication('{"intent": "refund", "confidence": 0.7, "secondary": "order_status"}', labels)
    assert probs.tolist() == pytest.approx([0.3, 0.7, 0.0])


def test_rules_follow_the_label_set(tmp_path, labels_file):
    labels = load_label_set(labels_file)
    assert load_rules(None, labels).rules == ()  # the packaged rules name only built-in intents: left out
    own = tmp_path / "rules.yaml"
    own.write_text("version: '1'\nrules:\n  - {id: chargeback, intent: escalation, description: d, "
                   "patterns: ['chargeback']}\n")
    with pytest.raises(RulesError, match="unknown intent 'escalation'"):
        load_rules(str(own), labels)


def test_a_store_label_set_goes_from_teacher_labeling_to_the_students_id2label(tmp_path, labels_file, tiny_encoder):
    teacher = build_tiny_bert(tmp_path / "teacher", labels=("order_status", "refund", "fraud_report"), seed=4)
    messages = tmp_path / "log.csv"
    storage.write_table(pa.Table.from_pylist([
        {"message_id": f"m{i}", "text": text} for i, text in enumerate(
            ["where is my parcel", "I want my money back", "someone used my card", "refund please",
             "tracking number?", "not my order on my account"])]), str(messages))
    votes, soft = str(tmp_path / "votes.parquet"), str(tmp_path / "soft.parquet")
    config = LabelingConfig(teacher_model=str(teacher), labels_uri=labels_file, adjudicator="none")
    run_teacher_labeling(str(messages), votes, str(tmp_path / "q1"), config)
    recorded = storage.read_table(votes)
    assert json.loads(recorded.schema.metadata[b"intents"]) == ["order_status", "refund", "fraud_report"]
    assert all(len(probs) == 3 for probs in recorded.column("classifier_probs").to_pylist())

    run_soft_label_ensemble(votes, soft, str(tmp_path / "report.json"), str(tmp_path / "q2"), EnsembleConfig())
    soft_table = storage.read_table(soft)
    assert set(soft_table.column("hard_label").to_pylist()) <= {"order_status", "refund", "fraud_report"}
    assert np.allclose([sum(p) for p in soft_table.column("soft_label").to_pylist()], 1.0, atol=1e-5)

    student = tmp_path / "student"
    run_distillation_training(soft, str(tiny_encoder), str(student), str(tmp_path / "q3"),
                              TrainConfig(epochs=1, batch_size=4))
    id2label = json.loads((student / "config.json").read_text())["id2label"]
    assert [id2label[str(i)] for i in range(3)] == ["order_status", "refund", "fraud_report"]


def test_member_votes_of_the_built_in_set_need_eight_probabilities():
    row = {"message_id": "1", "text": "x", "classifier_probs": [0.5, 0.5], "rule_intent": None, "rule_ids": [],
           "adjudicator_probs": None, "members": ["classifier"], "classifier_margin": 0.0, "classifier_entropy": 1.0}
    checked = validate_table(pa.Table.from_pylist([row]), MEMBER_VOTES, "v", max_bad_fraction=1.0)
    assert checked.quarantine.column("reason").to_pylist() == ["expected 8 probabilities, got 2"]


def test_the_gate_measures_a_store_label_set_from_what_its_data_records(tmp_path, labels_file):
    from mangadistill.intent.gate import EvalSetUris, run_intent_gate
    from mangadistill.intent.stages import run_handwritten_eval, run_quantization

    model = build_tiny_bert(tmp_path / "model", labels=("order_status", "refund", "fraud_report"), seed=5)
    texts = {"order_status": ["where is my parcel", "tracking number please", "has it shipped"],
             "refund": ["money back please", "refund my order", "I want a refund"],
             "fraud_report": ["someone used my card", "order I never made", "account hacked"]}
    rows = [{"message_id": f"{label}-{i}", "text": text, "label": label}
            for label, items in texts.items() for i, text in enumerate(items)]
    paths = {name: str(tmp_path / name) for name in ("eval.parquet", "hw.jsonl", "hw.parquet", "votes", "soft",
                                                     "hw-votes", "hw-soft", "int8")}
    storage.write_table(pa.Table.from_pylist(rows), paths["eval.parquet"])
    storage.write_table(pa.Table.from_pylist(rows[::2]), paths["hw.jsonl"])
    hand = run_handwritten_eval(paths["hw.jsonl"], paths["hw.parquet"], str(tmp_path / "hw-q"),
                                labels_uri=labels_file)
    assert hand["rows_fraud_report"] == 2 and "rows_escalation" not in hand
    labeling = LabelingConfig(str(model), labels_uri=labels_file, adjudicator="none")
    for messages, votes, soft in (("eval.parquet", "votes", "soft"), ("hw.parquet", "hw-votes", "hw-soft")):
        run_teacher_labeling(paths[messages], paths[votes], str(tmp_path / f"{votes}-q"), labeling)
        run_soft_label_ensemble(paths[votes], paths[soft], str(tmp_path / f"{soft}.json"),
                                str(tmp_path / f"{soft}-q"), EnsembleConfig())
    run_quantization(str(model), paths["int8"], paths["eval.parquet"])  # eval labels checked by its id2label

    outcome = run_intent_gate(
        EvalSetUris(paths["eval.parquet"], paths["soft"], paths["votes"]),
        EvalSetUris(paths["hw.parquet"], paths["hw-soft"], paths["hw-votes"]),
        str(model), str(model), paths["int8"], str(model), str(tmp_path / "report.html"), str(tmp_path / "e.json"))
    assert outcome.labels == ["order_status", "refund", "fraud_report"]
    assert np.asarray(outcome.confusion).shape == (3, 3) and np.asarray(outcome.confusion).sum() == 9
    assert outcome.metrics["eval_rows"] == 9 and outcome.metrics["eval_quarantined_rows"] == 0
    assert outcome.metrics["rare_recall_vs_baseline_min"] == 0.0  # the same model plays student and baseline
    assert "student_recall_fraud_report" in outcome.metrics and "student_recall_escalation" not in outcome.metrics
    assert "recall fraud_report" in (tmp_path / "report.html").read_text()
