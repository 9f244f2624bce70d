"""Redact personal data from customer text before any of it reaches a teacher model.

Each kind of personal data is replaced by a typed placeholder ([EMAIL], [CARD], [PHONE], [ORDER], [ADDRESS])
and counted. What is recognised:

- email: `name@domain.tld`, and the spelled-out `name at domain dot com`.
- card: 13-19 digits that pass the Luhn check, solid or in groups of 4 (Amex 4-6-5, Diners 4-6-4) separated
  by spaces or dashes; a solid 13-digit run starting 978/979 is an ISBN and is kept.
- phone: US numbers with separators (`(555) 123-4567`, `555.123.4567`, `+1 555 123 4567`, `1-800-555-0199`),
  a bare 10-digit run right after a word like "phone", "call", "text"; international `+CC ...`, 8-15 digits.
- order: the store's order numbers, see ORDER_NUMBER_FORMAT.
- address: US-style street addresses: house number, 1-4 name words (no common words such as "the", "on",
  "copies", "including"), a street suffix (Street, St, Ave, Rd, ...), an optional unit, then a capitalised
  city with optional state and ZIP, or a city in any case with state and ZIP (commas optional); `P.O. Box N`.

Order of application: email, card, phone, order, address (a card number is never half-read as a phone).

Kept on purpose (manga facts look like numbers too): SKUs (`MA-00001`, 5 digits after MA-), prices
(`$12.99`), years and dates, volume numbers and ranges (`vol 12`, `volumes 1-10`), ISBNs, and the last four
digits of a card on their own ("card ending 4242"). Limits: local 7-digit numbers without an area code,
addresses outside the US pattern (no street suffix, non-English) and names of people are not redacted; a
number after a month name or "vol"/"volume"/"chapter" is never taken for a house number.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

PII_KINDS: tuple[str, ...] = ("email", "card", "phone", "order", "address")
PLACEHOLDERS: dict[str, str] = {kind: f"[{kind.upper()}]" for kind in PII_KINDS}

ORDER_NUMBER_FORMAT = "MO-" + "D" * 8
"""The store's order numbers: "MO-" and 8 digits, e.g. MO-20481736. Customers also write #MO-20481736,
mo20481736, MO 20481736, #20481736, or the 8 digits alone after "order" ("order 20481736", "order number
20481736"); all of these are redacted. The prefix differs from SKUs (MA- and 5 digits), which are product facts."""
ORDER_DIGITS = 8

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_SPELLED_EMAIL = re.compile(
    r"\b[\w.+-]+\s+(?:at|\[at\]|\(at\))\s+[\w-]+\s+(?:dot|\[dot\]|\(dot\))\s+(?:com|net|org|edu|io|co|uk|jp)\b",
    re.IGNORECASE,
)
_CARD_CANDIDATE = re.compile(r"(?<![\w$.-])\d(?:[ -]?\d){12,18}(?![\w-])")
_US_PHONE = re.compile(
    r"(?<![\w$.+-])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w-])"
)
_CONTEXT_PHONE = re.compile(
    r"(?P<lead>\b(?:phone|cell|mobile|call|text|whatsapp|reach)\b[^\d\n]{0,20})(?P<number>(?<!\d)\d{10}(?!\d))",
    re.IGNORECASE,
)
_INTL_PHONE = re.compile(r"(?<![\w+])\+(?!1\b)\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,5}(?![\w-])")
_ORDER = re.compile(rf"(?<![\w#-])(?:#?MO[-\s]?|#\s?)\d{{{ORDER_DIGITS}}}(?!\d)", re.IGNORECASE)
_BARE_ORDER = re.compile(
    rf"(?P<lead>\border\b(?:\s+(?:number|num|no\.?|id))?\s*[:#]?\s*#?\s*)(?P<number>(?<!\d)\d{{{ORDER_DIGITS}}}(?!\d))",
    re.IGNORECASE,
)
_STREET_SUFFIXES = (
    "street", "st", "avenue", "ave", "road", "rd", "boulevard", "blvd", "lane", "ln", "drive", "dr", "court",
    "ct", "way", "place", "pl", "terrace", "ter", "parkway", "pkwy", "circle", "cir", "highway", "hwy",
    "square", "sq", "trail", "trl",
)
_NAME_WORD = r"(?:[A-Za-z][A-Za-z'.-]*|\d{1,3}(?:st|nd|rd|th))"
_CITY_STATE_ZIP = r"[A-Za-z]+(?:\s[A-Za-z]+){0,2},?\s+[A-Za-z]{2}\s+\d{5}(?:-\d{4})?"
_ADDRESS = re.compile(
    r"(?<![\w$#.,/-])(?P<number>\d{1,6}[A-Za-z]?)\s+"
    rf"(?P<names>(?:{_NAME_WORD}\s+){{0,3}}{_NAME_WORD})\s+"
    rf"(?P<suffix>{'|'.join(_STREET_SUFFIXES)})\b\.?"
    r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
    r"(?:,?\s*(?:apt|apartment|suite|ste|unit|#)\.?\s*#?[A-Za-z0-9-]+)?"
    rf"(?:,\s*(?:(?-i:[A-Z][A-Za-z]+(?:\s[A-Z][A-Za-z]+){{0,2}}(?:,?\s+[A-Z]{{2}})?(?:\s+\d{{5}}(?:-\d{{4}})?)?)"
    rf"|{_CITY_STATE_ZIP})|\s+{_CITY_STATE_ZIP})?",
    re.IGNORECASE,
)
_PO_BOX = re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d{1,6}\b", re.IGNORECASE)
_NOT_STREET_NAME_WORDS = frozenset(str.split(
    "the a an on of in to my your our for and or is it at by with from this that these those be was were "
    "vol vols volume volumes copy copies book books item items chapter chapters page pages day days week "
    "weeks month months year years hour hours minute minutes dollar dollars set sets box boxes order orders "
    "more less than all each per including like about near around before after into over under got get read "
    "ordered bought i return returns buy send need want have see find love read reading one two three four "
    "five six seven eight nine ten"
))
_NOT_HOUSE_NUMBER_LEAD = re.compile(
    r"(?i)\b(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|vol|vols|volume|volumes|chapter|ch|no|number|page|p|issue|the)"
    r"\.?\s+$"
)


def luhn_valid(digits: str) -> bool:
    """The Luhn check: from the right, double every second digit (minus 9 when over 9); the sum % 10 == 0."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_grouping_ok(candidate: str) -> bool:
    """Solid digits, or one separator style with groups 4-4-4-...-(1..4) or the Amex 4-6-5 / Diners 4-6-4."""
    separators = set(re.findall(r"[ -]", candidate))
    if not separators:
        return True
    if len(separators) > 1:
        return False
    groups = [len(group) for group in re.split(r"[ -]", candidate)]
    if groups in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(length == 4 for length in groups[:-1]) and 1 <= groups[-1] <= 4


def is_card_number(candidate: str) -> bool:
    """13-19 digits, a card-like grouping, the Luhn check, and not a solid 13-digit ISBN (978/979...)."""
    digits = re.sub(r"\D", "", candidate)
    if not 13 <= len(digits) <= 19 or not _card_grouping_ok(candidate):
        return False
    if len(digits) == 13 and digits.startswith(("978", "979")) and digits == candidate:
        return False
    return luhn_valid(digits)


def _is_intl_phone(candidate: str) -> bool:
    return 8 <= len(re.sub(r"\D", "", candidate)) <= 15


def _is_street_address(match: re.Match[str]) -> bool:
    words = [word.lower().strip(".") for word in match.group("names").split()]
    if _NOT_HOUSE_NUMBER_LEAD.search(match.string[: match.start()]):
        return False
    return not any(word in _NOT_STREET_NAME_WORDS for word in words)


@dataclass(frozen=True)
class Redaction:
    """A redacted text and how many spans of each kind were replaced (every kind in PII_KINDS present)."""

    text: str
    counts: dict[str, int]

    @property
    def kinds(self) -> list[str]:
        return [kind for kind in PII_KINDS if self.counts[kind]]


def _substitute(
    pattern: re.Pattern[str], text: str, placeholder: str, accept: Callable[[re.Match[str]], bool] | None = None,
    group: str | None = None,
) -> tuple[str, int]:
    """Replace matches (or only their `group`) that `accept` allows; return the text and the count."""
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        if accept is not None and not accept(match):
            return match.group()
        count += 1
        if group is None:
            return placeholder
        start, end = match.span(group)
        return match.group()[: start - match.start()] + placeholder + match.group()[end - match.start():]

    return pattern.sub(replace, text), count


def redact_text(text: str) -> Redaction:
    """Replace emails, card numbers, phone numbers, order numbers and street addresses by placeholders."""
    counts = dict.fromkeys(PII_KINDS, 0)
    steps: tuple[tuple[str, re.Pattern[str], Callable[[re.Match[str]], bool] | None, str | None], ...] = (
        ("email", _EMAIL, None, None),
        ("email", _SPELLED_EMAIL, None, None),
        ("card", _CARD_CANDIDATE, lambda m: is_card_number(m.group()), None),
        ("phone", _US_PHONE, None, None),
        ("phone", _INTL_PHONE, lambda m: _is_intl_phone(m.group()), None),
        ("phone", _CONTEXT_PHONE, None, "number"),
        ("order", _ORDER, None, None),
        ("order", _BARE_ORDER, None, "number"),
        ("address", _ADDRESS, _is_street_address, None),
        ("address", _PO_BOX, None, None),
    )
    for kind, pattern, accept, group in steps:
        text, count = _substitute(pattern, text, PLACEHOLDERS[kind], accept, group)
        counts[kind] += count
    return Redaction(text, counts)


def redact_texts(texts: Iterable[str]) -> tuple[list[str], list[list[str]], dict[str, int]]:
    """Redact many texts: (redacted texts, the kinds found in each, total count per kind)."""
    redacted, kinds = [], []
    totals: Counter[str] = Counter(dict.fromkeys(PII_KINDS, 0))
    for text in texts:
        result = redact_text(text)
        redacted.append(result.text)
        kinds.append(result.kinds)
        totals.update(result.counts)
    return redacted, kinds, {kind: totals[kind] for kind in PII_KINDS}
