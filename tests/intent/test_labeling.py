import numpy as np
import pyarrow as pa
import pytest

from mangadistill.core.contracts import validate_table
from mangadistill.intent import labeling
from mangadistill.intent.contracts import MEMBER_VOTES
from mangadistill.intent.labeling import LabelingConfig, ambiguous_mask, label_messages, margin_and_entropy
from mangadistill.intent.labels import INTENT_INDEX, INTENTS

TEXTS = [
    "where is my order?",
    "I am going to file a chargeback with my bank if this is not fixed today",
    "someone logged into my account and changed my password",
    "do you have Nana volume 3 in stock",
]


class ScriptedAdjudicator:
    """Answers in call order: a distribution per row, NaN for a row it could not answer."""

    name = "adjudicator"

    def __init__(self, answers: list[np.ndarray]):
        self.answers, self.asked = answers, []

    def adjudicate(self, texts):
        self.asked += list(texts)
        return np.stack(self.answers[: len(texts)])


def _messages(texts=TEXTS) -> pa.Table:
    return pa.table({"message_id": [f"m{i}" for i in range(len(texts))], "text": texts})


def test_margin_and_entropy_by_hand():
    probs = np.array([[0.5, 0.3, 0.2, 0, 0, 0, 0, 0], [1.0 / 8] * 8])
    margin, entropy = margin_and_entropy(probs)
    assert margin[0] == pytest.approx(0.2) and margin[1] == pytest.approx(0.0)
    expected = -(0.5 * np.log(0.5) + 0.3 * np.log(0.3) + 0.2 * np.log(0.2)) / np.log(8)
    assert entropy[0] == pytest.approx(expected) and entropy[1] == pytest.approx(1.0)
    assert ambiguous_mask(probs, margin_threshold=0.1, entropy_threshold=0.9).tolist() == [False, True]


def test_every_member_votes_and_is_recorded(tiny_intent_classifier, monkeypatch):
    answer = np.eye(len(INTENTS))[INTENT_INDEX["faq"]]
    scripted = ScriptedAdjudicator([answer, np.full(len(INTENTS), np.nan)] + [answer] * 2)
    monkeypatch.setattr(labeling, "build_adjudicator", lambda config, labels: scripted)
    # an untrained tiny teacher is unsure about everything: with these thresholds every row is ambiguous
    config = LabelingConfig(str(tiny_intent_classifier), ambiguity_margin=1.0, max_adjudications=2)
    votes, summary = label_messages(_messages(), config)

    assert validate_table(votes, MEMBER_VOTES, "votes").quarantine.num_rows == 0
    assert votes.column("rule_intent").to_pylist()[1:3] == ["escalation", "account_security"]
    members = votes.column("members").to_pylist()
    assert all(m[0] == "classifier" for m in members)
    assert sum("adjudicator" in m for m in members) == 1  # two asked (the cap), one answered NaN
    assert summary["ambiguous_rows"] == 4 and summary["adjudicated_rows"] == 1
    assert summary["adjudicator_failures"] == 1 and summary["adjudications_skipped_over_cap"] == 2
    assert summary["rule_hits"] == 2 and len(scripted.asked) == 2
    probs = np.array(votes.column("classifier_probs").to_pylist())
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_no_adjudicator_means_no_adjudicator_votes(tiny_intent_classifier):
    votes, summary = label_messages(_messages(), LabelingConfig(str(tiny_intent_classifier), adjudicator="none"))
    assert votes.column("adjudicator_probs").null_count == len(TEXTS)
    assert summary["adjudicated_rows"] == 0 and summary["adjudicator_failures"] == 0


def test_bad_adjudicator_settings_raise():
    with pytest.raises(ValueError, match="adjudicator must be one of"):
        labeling.build_adjudicator(LabelingConfig("x", adjudicator="gpt"))
    with pytest.raises(ValueError, match="adjudicator_base_url"):
        labeling.build_adjudicator(LabelingConfig("x", adjudicator="openai"))


def test_an_api_adjudicators_redactions_reach_the_summary(tiny_intent_classifier, monkeypatch):
    from collections import Counter
    from types import SimpleNamespace

    answer = np.eye(len(INTENTS))[INTENT_INDEX["faq"]]
    scripted = ScriptedAdjudicator([answer] * 4)
    scripted.client = SimpleNamespace(redactions=Counter({"email": 2, "phone": 0}), usage=SimpleNamespace(refused=1))
    monkeypatch.setattr(labeling, "build_adjudicator", lambda config, labels: scripted)
    _, summary = label_messages(_messages(), LabelingConfig(str(tiny_intent_classifier), ambiguity_margin=1.0))
    assert summary["adjudicator_redacted_email"] == 2 and summary["adjudicator_redacted_phone"] == 0
    assert summary["adjudicator_pii_refused"] == 1
