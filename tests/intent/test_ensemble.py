import numpy as np
import pyarrow as pa
import pytest

from mangadistill.core.contracts import validate_table
from mangadistill.intent.contracts import MEMBER_VOTES, SOFT_LABELS
from mangadistill.intent.ensemble import EnsembleConfig, combine_votes, ensemble_soft_labels
from mangadistill.intent.labels import INTENT_INDEX, INTENTS

K = len(INTENTS)


def _dist(**mass: float) -> list[float]:
    probs = [0.0] * K
    for name, p in mass.items():
        probs[INTENT_INDEX[name]] = p
    return probs


def _votes(rows: list[dict]) -> pa.Table:
    full = []
    for i, row in enumerate(rows):
        full.append({"message_id": f"m{i}", "text": row.get("text", f"message {i}"), "rule_ids": [],
                     "rule_intent": None, "adjudicator_probs": None, "members": ["classifier"],
                     "classifier_margin": 0.5, "classifier_entropy": 0.2, **row})
    return pa.Table.from_pylist(full, schema=MEMBER_VOTES)


def test_weighted_mean_of_members_that_voted():
    votes = _votes([
        {"classifier_probs": _dist(return_request=0.6, order_tracking=0.4),
         "adjudicator_probs": _dist(return_request=0.3, order_tracking=0.7)},
        {"classifier_probs": _dist(faq=1.0)},
    ])
    soft = combine_votes(votes, EnsembleConfig(classifier_weight=1.0, adjudicator_weight=1.0))
    assert soft[0, INTENT_INDEX["return_request"]] == pytest.approx(0.45, abs=1e-6)
    assert soft[0, INTENT_INDEX["order_tracking"]] == pytest.approx(0.55, abs=1e-6)
    assert soft[1, INTENT_INDEX["faq"]] == pytest.approx(1.0, abs=1e-6)  # adjudicator absent: classifier only


def test_temperature_flattens_and_rules_override():
    votes = _votes([
        {"classifier_probs": _dist(checkout_help=0.8, faq=0.2)},
        {"classifier_probs": _dist(checkout_help=0.8, faq=0.2), "rule_intent": "escalation",
         "rule_ids": ["esc-chargeback"], "members": ["classifier", "rules"]},
    ])
    flat = combine_votes(votes, EnsembleConfig(temperature=2.0))
    assert flat[0, INTENT_INDEX["checkout_help"]] < 0.8
    soft = combine_votes(votes, EnsembleConfig(rule_override=0.9))
    assert soft[1, INTENT_INDEX["escalation"]] == pytest.approx(0.9, abs=1e-6)
    assert soft[1].sum() == pytest.approx(1.0)


def test_output_keeps_its_contract_and_reports_agreement():
    votes = _votes([
        {"classifier_probs": _dist(return_request=0.55, order_tracking=0.45),
         "adjudicator_probs": _dist(order_tracking=0.9, return_request=0.1),
         "members": ["classifier", "adjudicator"]},
        {"classifier_probs": _dist(faq=0.9, checkout_help=0.1)},
        {"classifier_probs": _dist(faq=0.6, checkout_help=0.4), "rule_intent": "escalation",
         "members": ["classifier", "rules"]},
    ])
    table, report = ensemble_soft_labels(votes, EnsembleConfig())
    validated = validate_table(table, SOFT_LABELS, "soft")
    assert validated.quarantine.num_rows == 0
    assert table.column("members_agree").to_pylist() == [False, True, False]
    assert table.column("hard_label").to_pylist()[2] == "escalation"
    assert report["classifier_vs_adjudicator_agree_rate"] == 0.0
    assert report["classifier_vs_rules_agree_rate"] == 0.0
    assert sum(report["hard_label_counts"].values()) == 3
    example = report["examples"][0]
    assert "text" in example and all(0 <= v <= 1 for k, v in example.items() if k != "text")


@pytest.mark.parametrize("bad", [EnsembleConfig(temperature=0), EnsembleConfig(rule_override=1.5),
                                 EnsembleConfig(classifier_weight=0)])
def test_bad_config_raises(bad):
    with pytest.raises(ValueError):
        combine_votes(_votes([{"classifier_probs": _dist(faq=1.0)}]), bad)


def test_probabilities_sum_to_one_for_random_votes():
    rng = np.random.default_rng(0)
    rows = [{"classifier_probs": rng.dirichlet(np.ones(K)).tolist(),
             "adjudicator_probs": rng.dirichlet(np.ones(K)).tolist() if i % 2 else None} for i in range(20)]
    soft = combine_votes(_votes(rows), EnsembleConfig(temperature=1.7, adjudicator_weight=0.3))
    assert np.allclose(soft.sum(axis=1), 1.0)


def test_a_confident_classifier_keeps_its_label_against_a_default_rule():
    confident = {"classifier_probs": _dist(order_tracking=0.95, escalation=0.05), "rule_intent": "escalation"}
    unsure = {"classifier_probs": _dist(order_tracking=0.6, escalation=0.1, faq=0.3), "rule_intent": "escalation"}
    soft = combine_votes(_votes([confident, unsure]), EnsembleConfig())
    assert soft[0].argmax() == INTENT_INDEX["order_tracking"]  # 0.95 - 0.05 > 0.4 / 0.6
    assert soft[1].argmax() == INTENT_INDEX["escalation"]  # 0.6 - 0.1 < 0.4 / 0.6
    assert soft[0, INTENT_INDEX["escalation"]] == pytest.approx(0.4 + 0.6 * 0.05)
