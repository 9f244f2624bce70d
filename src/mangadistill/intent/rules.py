"""High-risk phrase rules: the rule member of the intent teacher ensemble.

Rules live in a versioned YAML file (the packaged default is `resources/escalation_rules.yaml`):

    version: "2026.11.1"
    rules:
      - {id: esc-chargeback, intent: escalation, description: ..., patterns: ['charge[\\s-]?backs?']}

Each pattern is compiled case-insensitively and wrapped in `(?<!\\w)(?:pattern)(?!\\w)`, so it matches
whole words only. When several rules hit one message, `RuleSet.intent_for` returns the intent that comes
first in `INTENT_PRIORITY` (escalation before account_security); other intents follow in file order.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import yaml

from mangadistill.intent.labels import BUILTIN_LABELS, LabelSet

log = logging.getLogger(__name__)
PACKAGED_RULES = "escalation_rules.yaml"
INTENT_PRIORITY: tuple[str, ...] = ("escalation", "account_security")
_RULE_KEYS = {"id", "intent", "patterns", "description"}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


class RulesError(ValueError):
    """The rules file is unreadable or breaks the contract; the message names the file, rule and pattern."""


@dataclass(frozen=True)
class RuleHit:
    """One rule that matched a message."""

    rule_id: str
    intent: str


@dataclass(frozen=True)
class Rule:
    """A named set of patterns that all vote for one intent."""

    id: str
    intent: str
    description: str
    patterns: tuple[re.Pattern[str], ...]

    def matches(self, text: str) -> bool:
        return any(pattern.search(text) for pattern in self.patterns)


@dataclass(frozen=True)
class RuleSet:
    """The rules of one YAML file, in file order, with the file's version string."""

    version: str
    rules: tuple[Rule, ...]
    source: str

    def match(self, text: str) -> list[RuleHit]:
        """Every rule that matches `text` (curly apostrophes count as straight ones), in file order."""
        normalised = text.translate(_APOSTROPHES)
        return [RuleHit(rule.id, rule.intent) for rule in self.rules if rule.matches(normalised)]

    def intent_for(self, text: str) -> str | None:
        """The intent of the highest-priority hit (see INTENT_PRIORITY), or None when no rule matches."""
        hits = self.match(text)
        if not hits:
            return None
        return min(hits, key=lambda hit: _priority(hit.intent)).intent


def _priority(intent: str) -> int:
    return INTENT_PRIORITY.index(intent) if intent in INTENT_PRIORITY else len(INTENT_PRIORITY)


def load_rules(uri: str | None = None, labels: LabelSet = BUILTIN_LABELS) -> RuleSet:
    """Load a rules YAML from a local path or gs:// URI; None loads the packaged default. Every rule's intent must
    be in `labels`, except that the packaged rules for intents a store's own label set lacks are left out
    (logged)."""
    from mangadistill.core.storage import read_text_or_resource

    text, source = read_text_or_resource(uri, PACKAGED_RULES)
    if uri:
        return parse_rules(text, source, labels)
    packaged = parse_rules(text, source)
    kept = tuple(rule for rule in packaged.rules if rule.intent in labels.names)
    if len(kept) < len(packaged.rules):
        log.warning("%s: %d packaged rules name intents outside the label set %s and are left out", source,
                    len(packaged.rules) - len(kept), labels.source)
    return RuleSet(version=packaged.version, rules=kept, source=source)


def parse_rules(text: str, source: str, labels: LabelSet = BUILTIN_LABELS) -> RuleSet:
    """Parse and validate rules YAML text (each rule's intent one of `labels`); `source` names the file in every
    error."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RulesError(f"{source}: not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise RulesError(f"{source}: expected a mapping with 'version' and 'rules' at the top level")
    version = document.get("version")
    if not isinstance(version, str) or not version.strip():
        raise RulesError(f"{source}: 'version' must be a non-empty quoted string, got {version!r}")
    entries = document.get("rules")
    if not isinstance(entries, list) or not entries:
        raise RulesError(f"{source}: 'rules' must be a non-empty list")
    rules: list[Rule] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        rule = _parse_rule(entry, position, source, labels)
        if rule.id in seen:
            raise RulesError(f"{source}: rule {rule.id!r}: duplicate id")
        seen.add(rule.id)
        rules.append(rule)
    return RuleSet(version=version, rules=tuple(rules), source=source)


def _parse_rule(entry: Any, position: int, source: str, labels: LabelSet) -> Rule:
    if not isinstance(entry, dict):
        raise RulesError(f"{source}: rules[{position}]: expected a mapping, got {type(entry).__name__}")
    rule_id = entry.get("id")
    if not isinstance(rule_id, str) or not rule_id:
        raise RulesError(f"{source}: rules[{position}]: 'id' must be a non-empty string")
    where = f"{source}: rule {rule_id!r}"
    unknown = sorted(set(entry) - _RULE_KEYS)
    if unknown:
        raise RulesError(f"{where}: unknown keys {unknown}; allowed: {sorted(_RULE_KEYS)}")
    intent = entry.get("intent")
    if intent not in labels.names:
        raise RulesError(f"{where}: unknown intent {intent!r}; expected one of {list(labels.names)}")
    description = entry.get("description")
    if not isinstance(description, str) or not description.strip():
        raise RulesError(f"{where}: 'description' must be a non-empty string")
    patterns = entry.get("patterns")
    if not isinstance(patterns, list) or not patterns:
        raise RulesError(f"{where}: 'patterns' must be a non-empty list of regexes")
    return Rule(
        id=rule_id,
        intent=intent,
        description=description.strip(),
        patterns=tuple(_compile(pattern, where) for pattern in patterns),
    )


def _compile(pattern: Any, where: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise RulesError(f"{where}: pattern {pattern!r} must be a non-empty string")
    try:
        re.compile(pattern)  # on its own first, so that "a)(b" cannot pass inside the wrapper
        return re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", re.IGNORECASE)
    except re.error as error:
        raise RulesError(f"{where}: invalid regex {pattern!r}: {error}") from error
