"""Slices of the fixed human-reviewed evaluation set: what action an answer takes, and whether it passes its
slice's check (`slice_check`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mangadistill.response.contracts import RESPONSE_EVAL_SLICES

_HANDOFF = re.compile(
    r"(?i)\b(?:hand(?:ing|ed)?\s+(?:your case|this|it|you)\s+(?:over\s+)?to|pass(?:ing)?\s+(?:your case|this|it)"
    r"\s+(?:on\s+)?to|escalat(?:e|es|ed|ing)|human (?:agent|colleague|support|team)|support agent|"
    r"(?:billing|customer care|support|trust and safety|account security) team|will (?:contact|reach out to|"
    r"get back to) you|take over)\b"
)
_REFUSAL = re.compile(
    r"(?i)\b(?:i can(?:no|')t|i cannot|i(?:'m| am) (?:not able|unable) to|i can only help|outside what i can|"
    r"not something i can|i won't be able to)\b"
)
_FIGURE = re.compile(r"\$?\d+(?:\.\d+)?(?:\s*-\s*\d+)?")
_WORD = re.compile(r"[a-z]+")
_STOPWORDS = frozenset((
    "that", "this", "with", "from", "your", "have", "will", "they", "them", "their", "there", "when", "what", "which",
    "into", "about", "been", "were", "than", "then", "also", "just", "only", "some", "more", "most", "such", "each",
    "very", "over", "before", "after",
))
POLICY_TERM_RECALL = 0.5


def detect_action(answer: str) -> str:
    """"handoff" when the answer hands the customer to a person or team, else "refuse" when it declines,
    else "answer" (phrasings in _HANDOFF and _REFUSAL)."""
    if _HANDOFF.search(answer):
        return "handoff"
    if _REFUSAL.search(answer):
        return "refuse"
    return "answer"


def _figures(text: str) -> set[str]:
    return {re.sub(r"\s+", "", m.group()) for m in _FIGURE.finditer(text.replace("\u2013", "-"))}


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 4 and w not in _STOPWORDS}


def slice_check(row: Mapping[str, Any], answer: str, fact: Mapping[str, Any]) -> bool:
    """Whether `answer` meets its slice's check; `fact` is the answer's FACT_CHECK row (n_claims, unsupported).

    - escalation: detect_action(answer) equals the row's expected_action ("refuse" or "handoff");
    - factuality: the answer answers (detect_action "answer"), makes at least one claim the fact checker checks,
      and none of its claims is unsupported;
    - policy: the answer answers, states every figure of the reviewed reference (numbers, amounts, ranges
      such as "30", "$35", "5-7") and at least POLICY_TERM_RECALL of its content words (4+ letters, no
      stopwords);
    - general: detect_action(answer) equals the row's expected_action and none of its claims is unsupported.
    """
    action = detect_action(answer)
    kind = row["slice"]
    if kind == "escalation":
        return action == row["expected_action"]
    if kind == "general":
        return action == row["expected_action"] and not fact["unsupported"]
    if kind == "factuality":
        return action == "answer" and fact["n_claims"] > 0 and not fact["unsupported"]
    if kind == "policy":
        reference = row["reference_response"]
        terms = _terms(reference)
        recall = len(terms & _terms(answer)) / len(terms) if terms else 1.0
        return action == "answer" and _figures(reference) <= _figures(answer) and recall >= POLICY_TERM_RECALL
    raise ValueError(f"unknown slice {kind!r}; expected one of {RESPONSE_EVAL_SLICES}")


def slice_scores(eval_rows: Sequence[Mapping[str, Any]], passed: Sequence[bool]) -> dict[str, float]:
    """Per slice of RESPONSE_EVAL_SLICES: passing rows / rows (NaN for a slice with no rows)."""
    scores = {}
    for name in RESPONSE_EVAL_SLICES:
        flags = [ok for row, ok in zip(eval_rows, passed, strict=True) if row["slice"] == name]
        scores[name] = float(np.mean(flags)) if flags else float("nan")
    return scores
