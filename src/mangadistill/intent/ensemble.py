"""Soft-label ensemble: member votes -> one probability per intent per message.

For each row, with the members that voted (weights renormalised over them):

    p̄ = Σ_m w_m · p_m / Σ_m w_m            (classifier and adjudicator distributions)
    p_T = softmax(log p̄ / T)               (temperature: T > 1 keeps more ambiguity, T < 1 sharpens)
    p  = (1 − r) · p_T + r · onehot(rule)   (only where a high-risk rule fired; r = rule_override)

The hard label is argmax p. With r < 0.5 a rule moves mass but a confident classifier keeps its label: the
rule's intent wins when p_top − p_rule < r / (1 − r) (0.67 at the default r = 0.4). That matters for the
multi-intent messages where a high-risk phrase is the secondary request. Agreement and entropy are reported
so a person can see how ambiguous the traffic is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mangadistill.intent.contracts import SOFT_LABELS, intent_contract
from mangadistill.intent.labels import BUILTIN_LABELS, LabelSet


@dataclass
class EnsembleConfig:
    classifier_weight: float = 1.0
    adjudicator_weight: float = 0.5
    temperature: float = 1.0
    rule_override: float = 0.4


def _tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def combine_votes(votes: pa.Table, config: EnsembleConfig, labels: LabelSet = BUILTIN_LABELS) -> np.ndarray:
    """The (n, number of intents) soft-label matrix from a MEMBER_VOTES table over `labels`."""
    if config.temperature <= 0 or not 0.0 <= config.rule_override <= 1.0:
        raise ValueError(f"need temperature > 0 and 0 <= rule_override <= 1, got {config}")
    if config.classifier_weight <= 0 or config.adjudicator_weight < 0:
        raise ValueError("classifier_weight must be > 0 and adjudicator_weight >= 0")
    classifier = np.asarray(votes.column("classifier_probs").to_pylist(), dtype=np.float64)
    total = config.classifier_weight * classifier
    weight = np.full((len(classifier), 1), config.classifier_weight)
    for i, probs in enumerate(votes.column("adjudicator_probs").to_pylist()):
        if probs is not None:
            total[i] += config.adjudicator_weight * np.asarray(probs)
            weight[i] += config.adjudicator_weight
    soft = _tempered(total / weight, config.temperature)
    index = labels.index
    for i, intent in enumerate(votes.column("rule_intent").to_pylist()):
        if intent is not None:
            soft[i] *= 1.0 - config.rule_override
            soft[i, index[intent]] += config.rule_override
    return soft


def ensemble_soft_labels(votes: pa.Table, config: EnsembleConfig,
                         labels: LabelSet = BUILTIN_LABELS) -> tuple[pa.Table, dict]:
    """MEMBER_VOTES -> (SOFT_LABELS table over `labels`, recording them in its metadata; report dict with
    agreement, entropy and the most ambiguous examples)."""
    soft = combine_votes(votes, config, labels)
    names, index = labels.names, labels.index
    hard = soft.argmax(axis=1)
    entropy = -(soft * np.log(np.clip(soft, 1e-12, 1.0))).sum(axis=1) / math.log(len(names))
    classifier_top = np.asarray(votes.column("classifier_probs").to_pylist()).argmax(axis=1)
    adjudicator = votes.column("adjudicator_probs").to_pylist()
    rules = votes.column("rule_intent").to_pylist()
    agree = []
    for i in range(len(soft)):
        tops = {int(classifier_top[i])}
        if adjudicator[i] is not None:
            tops.add(int(np.argmax(adjudicator[i])))
        if rules[i] is not None:
            tops.add(index[rules[i]])
        agree.append(len(tops) == 1)
    table = pa.Table.from_pydict(
        {
            "message_id": votes.column("message_id"),
            "text": votes.column("text"),
            "soft_label": soft.astype(np.float32).tolist(),
            "hard_label": [names[k] for k in hard],
            "entropy": entropy.astype(np.float32),
            "members": votes.column("members"),
            "members_agree": agree,
        },
        schema=intent_contract(SOFT_LABELS, labels),
    )
    adjudicated = np.array([a is not None for a in adjudicator])
    ruled = np.array([r is not None for r in rules])
    report = {
        "rows": len(soft),
        "members_agree_rate": float(np.mean(agree)),
        "classifier_vs_adjudicator_agree_rate": _agree_rate(classifier_top, adjudicator, adjudicated),
        "classifier_vs_rules_agree_rate": float(
            np.mean([classifier_top[i] == index[rules[i]] for i in np.flatnonzero(ruled)])
        ) if ruled.any() else float("nan"),
        "mean_normalised_entropy": float(entropy.mean()),
        "not_one_hot_rate": float(np.mean(soft.max(axis=1) < 0.9)),
        "hard_label_counts": {name: int((hard == k).sum()) for k, name in enumerate(names)},
        "entropy_histogram": np.histogram(entropy, bins=10, range=(0.0, 1.0))[0].tolist(),
        "examples": most_ambiguous_examples(table, soft, k=5, names=names),
    }
    return table, report


def _agree_rate(classifier_top: np.ndarray, adjudicator: list, mask: np.ndarray) -> float:
    rows = np.flatnonzero(mask)
    if not len(rows):
        return float("nan")
    return float(np.mean([classifier_top[i] == int(np.argmax(adjudicator[i])) for i in rows]))


def most_ambiguous_examples(table: pa.Table, soft: np.ndarray, k: int,
                            names: tuple[str, ...] = BUILTIN_LABELS.names) -> list[dict]:
    """The k highest-entropy rows as {"text": ..., "return_request": 0.55, ...} (their top 4 intents)."""
    entropy = table.column("entropy").to_numpy()
    texts = table.column("text").to_pylist()
    examples = []
    for i in np.argsort(-entropy, kind="stable")[:k]:
        top = np.argsort(-soft[i], kind="stable")[:4]
        examples.append({"text": texts[i], **{names[j]: round(float(soft[i, j]), 2) for j in top}})
    return examples
