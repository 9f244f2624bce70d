"""The intent label set: the built-in eight MangaAssist intents, or a store's own.

The built-in set (INTENTS, RARE_INTENTS, INTENT_DEFINITIONS) is the one source of truth for the default; every
probability vector is in the order of the label set in use. A run's label set comes from `load_label_set`:

- `labels_uri` empty: the built-in eight;
- a YAML file (local or gs://)::

      intents:
        - name: recommendation            # letters, digits, "_", "." or "-"; unique
          definition: wants suggestions of manga to read or buy.   # optional: the adjudicator's prompt line
          rare: false                      # optional: rare intents are gated on recall vs the baseline
        - name: escalation
          rare: true

- `labels_uri: teacher` (TEACHER_ID2LABEL): the teacher classifier's config `id2label`, in id order; rare and
  definitions are the built-in ones for names the built-in set has.

Tables that carry probability vectors (member votes, soft labels) record the label set in their schema metadata
(`LabelSet.metadata`), so later stages read it from the data (`label_set_from_metadata`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

INTENTS: tuple[str, ...] = (
    "recommendation",
    "product_question",
    "order_tracking",
    "return_request",
    "checkout_help",
    "faq",
    "account_security",
    "escalation",
)
RARE_INTENTS: tuple[str, ...] = ("account_security", "escalation")
INTENT_INDEX: dict[str, int] = {name: i for i, name in enumerate(INTENTS)}
INTENT_DEFINITIONS: dict[str, str] = {
    "recommendation": "wants suggestions of manga to read or buy, or titles similar to one they like.",
    "product_question": "asks about a specific product: volumes, editions, format, language, price, stock, "
    "age rating.",
    "order_tracking": "asks where an order is, when it ships or arrives, or about its tracking number.",
    "return_request": "wants to return or exchange an item, or a refund for it (damaged, wrong, unwanted).",
    "checkout_help": "has trouble paying or checking out: declined cards, payment methods, coupons, the "
    "cart.",
    "faq": "asks a general question about store policy or how the store works (shipping rates, opening "
    "hours, return policy, creating an account).",
    "account_security": "reports a hacked account, a login or order they did not make, or a password reset "
    "or two-factor code that does not work or arrive.",
    "escalation": "demands a human or a manager, threatens a chargeback, a bank dispute, legal action or a "
    "complaint to a regulator, or accuses the store of fraud.",
}
"""What each built-in intent means: the adjudicator's prompt lines."""

TEACHER_ID2LABEL = "teacher"
"""`labels_uri` value meaning: the teacher classifier's config id2label."""
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class LabelSetError(ValueError):
    """A label set file or id2label that cannot be used; the message names its source."""


@dataclass(frozen=True)
class LabelSet:
    """Intent names in probability-vector order, the rare ones, and what each means (may be empty)."""

    names: tuple[str, ...]
    rare: tuple[str, ...] = ()
    definitions: Mapping[str, str] = field(default_factory=dict)
    source: str = field(default="built-in", compare=False)

    def __post_init__(self) -> None:
        problems = []
        if len(self.names) < 2:
            problems.append(f"needs at least 2 intents, has {len(self.names)}")
        bad = [name for name in self.names if not isinstance(name, str) or not _NAME.match(name)]
        if bad:
            problems.append(f"intent names must be letters, digits, '_', '.' or '-': {bad}")
        repeated = sorted({name for name in self.names if self.names.count(name) > 1})
        if repeated:
            problems.append(f"repeated intents {repeated}")
        unknown = sorted(set(self.rare) - set(self.names))
        if unknown:
            problems.append(f"rare intents {unknown} are not in the set")
        if problems:
            raise LabelSetError(f"{self.source}: {'; '.join(problems)}")

    @property
    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def definition(self, name: str) -> str:
        """The adjudicator's line for `name`: its definition, else a neutral one."""
        return self.definitions.get(name) or f"has the intent '{name}'."

    def metadata(self) -> dict[bytes, bytes]:
        """The set as parquet schema metadata (`label_set_from_metadata` reads it back)."""
        return {b"intents": json.dumps(list(self.names)).encode(),
                b"rare_intents": json.dumps(list(self.rare)).encode(),
                b"intent_definitions": json.dumps(dict(self.definitions)).encode()}


BUILTIN_LABELS = LabelSet(INTENTS, RARE_INTENTS, INTENT_DEFINITIONS)


def label_set_from_metadata(metadata: Mapping[bytes, bytes] | None, source: str = "table") -> LabelSet:
    """The label set a table records (`LabelSet.metadata`); the built-in set when it records none."""
    metadata = metadata or {}
    if b"intents" not in metadata:
        return BUILTIN_LABELS
    names = tuple(json.loads(metadata[b"intents"]))
    if names == INTENTS and b"rare_intents" not in metadata:  # written before label sets were recorded
        return BUILTIN_LABELS
    return LabelSet(names, tuple(json.loads(metadata.get(b"rare_intents", b"[]"))),
                    json.loads(metadata.get(b"intent_definitions", b"{}")), source)


def _builtin_extras(names: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    return (tuple(name for name in names if name in RARE_INTENTS),
            {name: INTENT_DEFINITIONS[name] for name in names if name in INTENT_DEFINITIONS})


def label_set_from_id2label(id2label: Mapping, source: str) -> LabelSet:
    """A classifier's id2label as a label set, in id order (rare and definitions: the built-in ones it shares)."""
    try:
        ordered = sorted((int(i), str(name)) for i, name in id2label.items())
    except (TypeError, ValueError) as exc:
        raise LabelSetError(f"{source}: id2label keys must be integers: {exc}") from exc
    if [i for i, _ in ordered] != list(range(len(ordered))):
        raise LabelSetError(f"{source}: id2label ids must be 0..{len(ordered) - 1}, got {[i for i, _ in ordered]}")
    names = tuple(name for _, name in ordered)
    rare, definitions = _builtin_extras(names)
    return LabelSet(names, rare, definitions, source)


def load_label_set(labels_uri: str = "", teacher_dir: str = "") -> LabelSet:
    """The label set of a run: built-in (labels_uri empty), the teacher's id2label (labels_uri "teacher";
    teacher_dir is the teacher's local folder), or a YAML file (module docstring). LabelSetError names the file
    or folder and the problem."""
    if not labels_uri:
        return BUILTIN_LABELS
    if labels_uri == TEACHER_ID2LABEL:
        config = Path(teacher_dir, "config.json")
        if not teacher_dir or not config.is_file():
            raise LabelSetError(f"labels_uri {TEACHER_ID2LABEL!r} needs the teacher's folder with config.json, "
                                f"got {teacher_dir!r}")
        return label_set_from_id2label(json.loads(config.read_text()).get("id2label") or {}, str(config))
    import yaml

    from mangadistill.core.storage import read_text

    try:
        document = yaml.safe_load(read_text(labels_uri))
    except yaml.YAMLError as exc:
        raise LabelSetError(f"{labels_uri}: not YAML: {exc}") from exc
    entries = document.get("intents") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise LabelSetError(f"{labels_uri}: expected a mapping with an 'intents' list")
    names, rare, definitions = [], [], {}
    for position, entry in enumerate(entries):
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise LabelSetError(f"{labels_uri}: intents[{position}]: expected a name or {{name, definition, rare}}")
        unknown = sorted(set(entry) - {"name", "definition", "rare"})
        if unknown:
            raise LabelSetError(f"{labels_uri}: intents[{position}]: unknown keys {unknown}")
        names.append(entry["name"])
        if entry.get("rare") is True:
            rare.append(entry["name"])
        if entry.get("definition"):
            definitions[entry["name"]] = str(entry["definition"]).strip()
    return LabelSet(tuple(names), tuple(rare), definitions, labels_uri)
