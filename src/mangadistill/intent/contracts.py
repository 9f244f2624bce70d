"""Intent contracts: messages, labelled messages, the ensemble members' votes and the soft labels.

Every probability vector is in the order of the run's label set (`labels.LabelSet`; the built-in INTENTS by
default), which travels in each table's schema metadata. The contracts here check the built-in set;
`intent_contract(schema, labels)` is the same contract for another set, and `read_intent_table` reads a table
with the label set it records.
"""

from __future__ import annotations

import json
import logging
import math

import pyarrow as pa

from mangadistill.core.contracts import (
    RowCheck,
    ValidatedTable,
    nonempty_text,
    register_row_checks,
    row_checks,
    validate_table,
)
from mangadistill.intent.labels import BUILTIN_LABELS, INTENTS, RARE_INTENTS, LabelSet, label_set_from_metadata

log = logging.getLogger(__name__)
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


def _label_in(labels: LabelSet, what: str) -> RowCheck:
    known = set(labels.names)
    return lambda value: None if value in known else what


def _probabilities_over(labels: LabelSet) -> RowCheck:
    size = len(labels.names)

    def check(value: object) -> str | None:
        probs = list(value)  # type: ignore[call-overload]
        if len(probs) != size:
            return f"expected {size} probabilities, got {len(probs)}"
        if any(p is None or math.isnan(p) for p in probs):
            return "NaN probability"
        if any(p < 0 for p in probs):
            return "negative probability"
        if abs(sum(probs) - 1.0) > SOFT_LABEL_TOLERANCE:
            return f"probabilities sum to {sum(probs):.4f}, not 1 within {SOFT_LABEL_TOLERANCE}"
        return None

    return check


def _row_checks(contract: str, labels: LabelSet) -> dict[str, RowCheck]:
    """The row checks of an intent contract (by its base name) for one label set."""
    label, probs = _label_in(labels, "unknown intent label"), _probabilities_over(labels)
    return {
        "messages": {"text": nonempty_text},
        "labelled_messages": {"text": nonempty_text, "label": label},
        "handwritten_messages": {"text": nonempty_text, "label": label,
                                 "also_plausible": _label_in(labels, "unknown also_plausible intent")},
        "member_votes": {"text": nonempty_text, "rule_intent": label, "classifier_probs": probs,
                         "adjudicator_probs": probs},
        "soft_labels": {"text": nonempty_text, "soft_label": probs, "hard_label": label},
    }[contract]


for _schema in (MESSAGES, LABELLED_MESSAGES, HANDWRITTEN_MESSAGES, MEMBER_VOTES, SOFT_LABELS):
    register_row_checks(_schema, _row_checks(_schema.metadata[b"contract"].decode(), BUILTIN_LABELS))


def intent_contract(schema: pa.Schema, labels: LabelSet) -> pa.Schema:
    """`schema` for a run's label set: the contract itself for the built-in set, else a copy that records the set
    in its metadata (so tables validated against it carry it on) with row checks against its names."""
    if labels.names == INTENTS and labels.rare == RARE_INTENTS:
        return schema
    base = schema.metadata[b"contract"].decode()
    name = f"{base}[{','.join(labels.names)}|{','.join(labels.rare)}]"
    contract = schema.with_metadata({**schema.metadata, b"contract": name.encode(), **labels.metadata()})
    if not row_checks(contract):
        register_row_checks(contract, _row_checks(base, labels))
    return contract


def read_intent_table(uri: str, schema: pa.Schema, on_bad_rows: str = "quarantine", quarantine_uri: str | None = None,
                      labels: LabelSet | None = None) -> tuple[ValidatedTable, LabelSet]:
    """Read and validate an intent table against `schema` for `labels` (default: the label set the file records,
    the built-in one when it records none); write its quarantine when a URI is given."""
    from mangadistill.core import storage

    table = storage.read_table(uri)
    labels = labels or label_set_from_metadata(table.schema.metadata, uri)
    validated = validate_table(table, intent_contract(schema, labels), source=uri, on_bad_rows=on_bad_rows)
    if quarantine_uri:
        storage.write_table(validated.quarantine, quarantine_uri)
    if validated.quarantine.num_rows:
        log.warning("%s: %d rows quarantined: %s", uri, validated.quarantine.num_rows, validated.reason_counts)
    return validated, labels
