"""Intent contracts: messages, labelled messages, the ensemble members' votes and the soft labels.

Every probability vector is in INTENTS order; the label set travels in each schema's b"intents" metadata.
"""

from __future__ import annotations

import json
import math

import pyarrow as pa

from mangadistill.core.contracts import nonempty_text, register_row_checks
from mangadistill.intent.labels import INTENTS

SOFT_LABEL_TOLERANCE = 1e-3
_META = {b"intents": json.dumps(list(INTENTS)).encode()}

MESSAGES = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ],
    metadata={b"contract": b"messages"},
)
"""Unlabelled customer messages (the production log)."""

LABELLED_MESSAGES = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
    ],
    metadata={b"contract": b"labelled_messages", **_META},
)
"""Messages with one intent label each (teacher training split, human-labelled evaluation split)."""

HANDWRITTEN_MESSAGES = pa.schema(
    [
        *LABELLED_MESSAGES,
        pa.field("also_plausible", pa.string()),
    ],
    metadata={b"contract": b"handwritten_messages", **_META},
)
"""LABELLED_MESSAGES plus `also_plausible`: a second intent a reasonable reader could pick (null when the
message is unambiguous). `label` is the intent to act on first; the ambiguous slice is the non-null rows."""

MEMBER_VOTES = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("classifier_probs", pa.list_(pa.float32()), nullable=False),
        pa.field("rule_intent", pa.string()),
        pa.field("rule_ids", pa.list_(pa.string()), nullable=False),
        pa.field("adjudicator_probs", pa.list_(pa.float32())),
        pa.field("members", pa.list_(pa.string()), nullable=False),
        pa.field("classifier_margin", pa.float32(), nullable=False),
        pa.field("classifier_entropy", pa.float32(), nullable=False),
    ],
    metadata={b"contract": b"member_votes", **_META},
)
"""What each teacher-ensemble member said about each message; `members` names who voted on the row."""

SOFT_LABELS = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("soft_label", pa.list_(pa.float32()), nullable=False),
        pa.field("hard_label", pa.string(), nullable=False),
        pa.field("entropy", pa.float32(), nullable=False),
        pa.field("members", pa.list_(pa.string()), nullable=False),
        pa.field("members_agree", pa.bool_(), nullable=False),
    ],
    metadata={b"contract": b"soft_labels", **_META},
)
"""One probability per intent (INTENTS order, summing to 1) and its argmax, per message."""


def _label_check(value: object) -> str | None:
    return None if value in INTENTS else "unknown intent label"


def _probs_check(value: object) -> str | None:
    probs = list(value)  # type: ignore[call-overload]
    if len(probs) != len(INTENTS):
        return f"expected {len(INTENTS)} probabilities, got {len(probs)}"
    if any(p is None or math.isnan(p) for p in probs):
        return "NaN probability"
    if any(p < 0 for p in probs):
        return "negative probability"
    if abs(sum(probs) - 1.0) > SOFT_LABEL_TOLERANCE:
        return f"probabilities sum to {sum(probs):.4f}, not 1 within {SOFT_LABEL_TOLERANCE}"
    return None


register_row_checks(MESSAGES, {"text": nonempty_text})
register_row_checks(LABELLED_MESSAGES, {"text": nonempty_text, "label": _label_check})


def _second_intent_check(value: object) -> str | None:
    return None if value in INTENTS else "unknown also_plausible intent"


register_row_checks(HANDWRITTEN_MESSAGES, {
    "text": nonempty_text, "label": _label_check, "also_plausible": _second_intent_check,
})
register_row_checks(MEMBER_VOTES, {
    "text": nonempty_text, "rule_intent": _label_check, "classifier_probs": _probs_check,
    "adjudicator_probs": _probs_check,
})
register_row_checks(SOFT_LABELS, {
    "text": nonempty_text, "soft_label": _probs_check, "hard_label": _label_check,
})
