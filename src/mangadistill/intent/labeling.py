"""Teacher labeling for intents: run the ensemble members over messages and record every vote.

Members: (a) a fine-tuned classifier on every row; (b) versioned escalation rules on every row; (c) an LLM
adjudicator only on ambiguous rows, where the classifier's top-2 margin p1 − p2 is below `ambiguity_margin`
or its normalised entropy H(p)/ln K is above `ambiguity_entropy`. The `members` column names who voted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mangadistill.intent.classifier import TextClassifier
from mangadistill.intent.contracts import MEMBER_VOTES, intent_contract
from mangadistill.intent.labels import BUILTIN_LABELS, LabelSet, load_label_set

log = logging.getLogger(__name__)
ADJUDICATOR_BACKENDS = ("none", "local", "openai")


@dataclass
class LabelingConfig:
    """Where the members come from and when the adjudicator is asked."""

    teacher_model: str
    labels_uri: str = ""
    """The label set (`labels.load_label_set`): empty for the built-in intents, "teacher" for the teacher's
    id2label, or a YAML file."""
    rules_uri: str = ""
    adjudicator: str = "local"
    adjudicator_model: str = "smollm2-135m"
    adjudicator_base_url: str = ""
    adjudicator_structured_api: str = ""
    ambiguity_margin: float = 0.2
    ambiguity_entropy: float = 0.6
    max_adjudications: int = 1000
    batch_size: int = 64
    max_length: int = 64


def margin_and_entropy(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-2 margin p(1) − p(2) and normalised entropy −Σ p ln p / ln K, per row."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1) / math.log(probs.shape[1])
    return margin, entropy


def ambiguous_mask(probs: np.ndarray, margin_threshold: float, entropy_threshold: float) -> np.ndarray:
    margin, entropy = margin_and_entropy(probs)
    return (margin < margin_threshold) | (entropy > entropy_threshold)


def build_adjudicator(config: LabelingConfig, labels: LabelSet = BUILTIN_LABELS):
    """The adjudicator the config names over `labels`, or None for 'none'."""
    if config.adjudicator not in ADJUDICATOR_BACKENDS:
        raise ValueError(f"adjudicator must be one of {ADJUDICATOR_BACKENDS}, got {config.adjudicator!r}")
    if config.adjudicator == "none":
        return None
    from mangadistill.intent import adjudicator

    if config.adjudicator == "openai":
        if not config.adjudicator_base_url:
            raise ValueError("adjudicator 'openai' needs adjudicator_base_url (an OpenAI-compatible API)")
        return adjudicator.OpenAIChatAdjudicator(config.adjudicator_base_url, config.adjudicator_model, labels=labels,
                                                 structured_api=config.adjudicator_structured_api)
    from mangadistill.core.models import resolve_model

    return adjudicator.LocalLMAdjudicator(resolve_model(config.adjudicator_model), labels=labels)


def label_messages(messages: pa.Table, config: LabelingConfig) -> tuple[pa.Table, dict[str, float]]:
    """MESSAGES table -> (MEMBER_VOTES table recording the label set in its metadata, summary metrics)."""
    from mangadistill.core.models import resolve_model
    from mangadistill.intent.rules import load_rules

    texts = messages.column("text").to_pylist()
    teacher_dir = resolve_model(config.teacher_model)
    labels = load_label_set(config.labels_uri, teacher_dir)
    classifier = TextClassifier(teacher_dir, labels.names, config.max_length)
    probs = classifier.predict_proba(texts, config.batch_size, progress="teacher classifier")
    margin, entropy = margin_and_entropy(probs)

    rules = load_rules(config.rules_uri or None, labels)
    hits = [rules.match(text) for text in texts]
    rule_intents = [rules.intent_for(text) for text in texts]

    adjudicated: dict[int, np.ndarray] = {}
    candidates = np.flatnonzero(ambiguous_mask(probs, config.ambiguity_margin, config.ambiguity_entropy))
    skipped_over_cap = max(0, len(candidates) - config.max_adjudications)
    adjudicator = build_adjudicator(config, labels)
    if adjudicator is not None and len(candidates):
        # the least certain rows first, when the cap cuts the list
        chosen = candidates[np.argsort(margin[candidates], kind="stable")][: config.max_adjudications]
        answers = adjudicator.adjudicate([texts[i] for i in chosen])
        for row, answer in zip(chosen, answers, strict=True):
            if np.all(np.isfinite(answer)):
                adjudicated[int(row)] = answer
    failures = (0 if adjudicator is None else min(len(candidates), config.max_adjudications)) - len(adjudicated)

    members = []
    for i in range(len(texts)):
        voted = ["classifier"]
        if rule_intents[i] is not None:
            voted.append("rules")
        if i in adjudicated:
            voted.append("adjudicator")
        members.append(voted)
    votes = pa.Table.from_pydict(
        {
            "message_id": messages.column("message_id"),
            "text": messages.column("text"),
            "classifier_probs": [row.tolist() for row in probs],
            "rule_intent": rule_intents,
            "rule_ids": [[hit.rule_id for hit in row_hits] for row_hits in hits],
            "adjudicator_probs": [adjudicated[i].tolist() if i in adjudicated else None for i in range(len(texts))],
            "members": members,
            "classifier_margin": margin.astype(np.float32),
            "classifier_entropy": entropy.astype(np.float32),
        },
        schema=intent_contract(MEMBER_VOTES, labels),
    )
    summary = {
        "rows": float(len(texts)),
        "ambiguous_rows": float(len(candidates)),
        "adjudicated_rows": float(len(adjudicated)),
        "adjudicator_failures": float(failures),
        "adjudications_skipped_over_cap": float(skipped_over_cap if adjudicator is not None else 0),
        "rule_hits": float(sum(1 for r in rule_intents if r is not None)),
        "mean_classifier_entropy": float(entropy.mean()),
    }
    client = getattr(adjudicator, "client", None)  # an API adjudicator: what its client redacted before sending
    if client is not None:
        summary.update({f"adjudicator_redacted_{kind}": float(n) for kind, n in client.redactions.items()})
        summary["adjudicator_pii_refused"] = float(client.usage.refused)
    log.info("teacher labeling: %s (rules version %s)", summary, rules.version)
    return votes, summary
