"""Catalog fact checker: find claims about titles, authors, volume counts, prices, stock and status in an
assistant response and check each against the store catalog.

A response is split into sentences after catalog titles and author names are masked (so "Dr. Stone" or
"Haikyu!!" do not end a sentence). Each claim binds to the nearest catalog title before it in the sentence,
else the first one after it, else (only when the sentence refers back with "it", "they", "the series",
"each volume", "volume N" ...) the last title of the earlier sentences. A claim with no title is not checked.

Claims recognised (English, the phrasings an assistant uses; anything else is not seen), and when each is
a finding:

- title: emphasised or quoted title-like text (`*X*`, `**X**`, `_X_`, `"X"`), `X by <author>`, and
  `X has/is/costs/runs ...` opening a sentence that makes another claim: a finding when X is not a catalog
  title. Titles match after accent folding, case-sensitively except titles of 3+ words; the part before a
  colon is an alias when unique ("Demon Slayer"); the one-letter title "X" only when emphasised or quoted.
- author: `by A[, B and C]`, `written/drawn/created by A`, `A wrote/created/drew ...`, `author is A`: a
  finding when A is not among the title's authors (a name sharing a word with one of them, "by Oda", is right;
  a lone unknown word after "by" is not read as a name).
- volume count: `has/runs/spans/in/with/all N volumes`, `N volumes in total/so far/long/out`, `N-volume series`
  (N in digits or one..twenty): a finding when N differs from the catalog count. "the first 3 volumes" and
  "3 volumes in stock" are not counts.
- price: `$X` (or `X USD`) after costs/priced at/is/for/only, or before each/per volume; `$X for all N volumes`
  and `$X for the full set`: a finding when X differs from the unit price (or unit price x N) by more than half
  a cent. Amounts after over/under/shipping/refund/off/total are not prices of a title.
- stock: `in stock`, `available now`, `ready to ship`; `out of stock`, `sold out`, `not in stock`,
  `unavailable`; `N left/remaining/in stock`: a finding when the claim disagrees with the catalog's stock (in
  stock means stock > 0). "back in stock" and "when/once/if ... in stock" are not claims.
- status: `is completed/finished`, `has ended`; `still ongoing/running/being published`, `not finished`;
  `on hiatus`: a finding for completed when the series is not, ongoing when it is completed, hiatus when it is
  not (ongoing is right for a series on hiatus).

Limits: stock and price are per series (the catalog has no per-volume stock); numbers written as words only
up to twenty; claims split over sentences without a back-reference, comparisons ("more volumes than
Naruto") and claims about release dates, editions, page counts, genres or plots are not checked; an
invented title written in lower case and in no claim pattern is not found.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError

FINDING_KINDS: tuple[str, ...] = (
    "unknown_title", "wrong_author", "wrong_volume_count", "wrong_price", "wrong_stock", "wrong_status",
)
PRICE_TOLERANCE = 0.005
CASE_INSENSITIVE_MIN_WORDS = 3
"""Titles of at least this many words also match in any letter case."""

_T_OPEN, _T_CLOSE = "\ue000", "\ue001"
_TITLE_TOKEN = re.compile(f"{_T_OPEN}T(\\d+){_T_CLOSE}")
_AUTHOR_TOKEN = re.compile(f"{_T_OPEN}A(\\d+){_T_CLOSE}")
_ANY_TOKEN = re.compile(f"{_T_OPEN}[TA](\\d+){_T_CLOSE}")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_NUMBER_WORDS = {
    word: value for value, word in enumerate((
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"))
}
_NUM = r"(\d{1,3}|" + "|".join(_NUMBER_WORDS) + r")"
_VOLUMES_AFTER = re.compile(rf"(?i)\b{_NUM}\s*(?:-\s*)?(?:volumes?|vols?\.?)(?!\w)")
_COUNT_LEAD = re.compile(
    r"(?i)(?:\b(?:has|have|had|with|in|at|runs?|runs? to|runs? for|spans?|spanning|totals?|totaling|"
    r"is|are|was|were|all|of|complete in|completed in|completed at|ended at|ended with|finished at|"
    r"finished in|finished with|only|just|about|total of)|'s)\s+$"
)
_COUNT_TAIL = re.compile(
    r"(?i)^\s*(?:in total|total|so far|long|out|published|in all|altogether|series|run|manga|story|set|"
    r"box set|and counting)\b"
)
_NOT_COUNT_LEAD = re.compile(r"(?i)\b(?:first|last|next|previous|buy|bought|order|ordered|read|get|add)\s+(?:the\s+)?$")
_NOT_COUNT_TAIL = re.compile(r"(?i)^\s*(?:in stock|left|remaining|available|are in stock|ready)\b")
_MONEY = re.compile(r"\$\s?(\d{1,4}(?:,\d{3})*(?:\.\d{2})?)(?!\d)|(?<![\w.])(\d{1,4}\.\d{2})\s?(?:USD|dollars)\b")
_MONEY_SKIP_LEAD = re.compile(
    r"(?i)\b(?:over|above|under|below|orders?|shipping|refund(?:ed)?|credit(?:ed)?|spend|off|discount|save|"
    r"fee|minimum|threshold|total|budget|voucher|gift card|charged?)\b[^$\d]{0,15}$"
)
_MONEY_UNIT_LEAD = re.compile(
    r"(?i)(?:\b(?:costs?|priced at|price is|price of|sells? for|retails? for|is|are|at|just|only|for|"
    r"runs?)|:)\s*$"
)
_MONEY_UNIT_TAIL = re.compile(r"(?i)^\s*(?:per volume|each|a volume|per copy|apiece|a copy|per book|per vol)\b")
_MONEY_SET_TAIL = re.compile(rf"(?i)^\s*for (?:all |the )?(?:all )?{_NUM} (?:volumes|vols)\b")
_MONEY_FULL_SET_TAIL = re.compile(r"(?i)^\s*for the (?:whole|full|complete|entire) (?:set|series|run)\b")
_STOCK_COUNT = re.compile(
    r"(?i)\b(?:only |just )?(\d{1,4}) (?:copies |copy |sets |units |of them )?(?:left|remaining|in stock)\b"
)
_OUT_OF_STOCK = re.compile(
    r"(?i)\b(?:out of stock|sold out|unavailable|no copies (?:left|in stock)|none left|"
    r"(?:not|isn't|aren't|is not|are not|no longer) (?:currently |yet )?(?:in stock|available))\b"
)
_IN_STOCK = re.compile(r"(?i)\b(?:in stock|available (?:now|to ship|today|right now)|ready to ship)\b")
_STOCK_SKIP_LEAD = re.compile(r"(?i)(?:\bback|\b(?:when|once|if|until|notify|alert)\b.{0,30})\s*$")
_STATUS_ONGOING = re.compile(
    r"(?i)\b(?:ongoing|still (?:running|being published|in serialization|coming out)|being serialized|"
    r"not (?:yet )?(?:finished|complete|completed|over))\b"
)
_STATUS_COMPLETED = re.compile(
    r"(?i)\b(?:(?:is|was|has been|'s) (?:now |already )?(?:complete|completed|finished)|"
    r"(?:completed|finished) series|has (?:ended|finished|concluded))\b"
)
_STATUS_HIATUS = re.compile(r"(?i)\bon (?:hiatus|a break)\b")
_NEGATION_LEAD = re.compile(r"(?i)\b(?:not|isn't|wasn't|hasn't|never|no)\s+(?:yet\s+)?$")
_BY_AUTHORS = re.compile(
    r"(?:\b(?:written|drawn|created|illustrated)\s+)?\bby\s+"
    rf"((?:{_T_OPEN}A\d+{_T_CLOSE}|[A-Z][a-z'.-]+(?:\s+[A-Z][a-z'.-]+){{0,3}})"
    rf"(?:(?:,\s*|\s+and\s+|\s*&\s*)(?:{_T_OPEN}A\d+{_T_CLOSE}|[A-Z][a-z'.-]+(?:\s+[A-Z][a-z'.-]+){{0,3}}))*)"
)
_AUTHOR_SUBJECT = re.compile(
    rf"{_T_OPEN}A(\d+){_T_CLOSE}\s+(?:wrote|created|drew|is the (?:author|mangaka|creator))\b"
    rf"|\b(?:author|mangaka|creator)s?\s+(?:is|are|was)\s+{_T_OPEN}A(\d+){_T_CLOSE}"
)
_ANAPHOR = re.compile(
    r"(?i)\b(?:it|it's|its|they|them|their|the series|this series|that series|the manga|the story|"
    r"each volume|every volume|the set|the box set|volume \d+|vol\.? ?\d+)\b"
)
_CONNECTORS = {"of", "the", "on", "no", "to", "a", "an", "and", "in", "x", "ga", "wa", "de", "wo", "&"}
_TITLE_WORD = r"(?:[A-Z0-9][\w'!?.:-]*)"
_CAP_PHRASE = rf"{_TITLE_WORD}(?:\s+(?:{_TITLE_WORD}|{'|'.join(sorted(_CONNECTORS - {'&'}))}|&))*"
_PHRASE_BEFORE_BY = re.compile(rf"({_CAP_PHRASE})\s+(?:by)\s+$")
_SUBJECT_CLAIM = re.compile(rf"^\W*({_CAP_PHRASE})\s+(?:has|have|is|are|was|costs?|runs?|sells?|spans?)\b")


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_EMPHASIS = re.compile(r"\*\*([^*\n]{1,80})\*\*|(?<!\*)\*([^*\n]{1,80})\*(?!\*)|(?<!\w)_([^_\n]{1,80})_(?!\w)"
                       r'|"([^"\n]{1,80})"')
_NON_TITLE_STARTERS = _word_set(
    "it its it's this that these those they we you i our your my their he she his her each every all any some "
    "volume volumes vol yes sure no unfortunately currently note also and but or so if then great good thanks "
    "thank hi hello hey try read check consider maybe perhaps start grab pick get recommend recommended the a "
    "an published translated written drawn created illustrated shipped sold released edited here there "
    "both either neither one another only just please what which who when where how why standard express "
    "free orders order returns refunds shipping delivery"
)
_NON_NAME_WORDS = _word_set(
    "monday tuesday wednesday thursday friday saturday sunday january february march april may june july "
    "august september october november december next this the our your standard express priority ground mail "
    "post support team store customer service mangaassist email phone tomorrow today end week month"
)
_STORE_WORDS = _word_set(
    "stock order orders shipping return returns refund refunds policy delivery processing volume volumes price "
    "note tip label created delivered shipped cart checkout account"
)


def fold(text: str) -> str:
    """Per-character accent folding (Ä -> A, û -> u) and straight quotes; the length never changes."""
    out = []
    for char in text.translate(_QUOTES):
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        out.append(base if len(base) == 1 else char)
    return "".join(out)


@dataclass(frozen=True)
class Finding:
    """One unsupported claim: its kind (FINDING_KINDS), the claim as written, the title it is about, and
    what the catalog says instead."""

    kind: str
    claim: str
    title: str
    expected: str


@dataclass(frozen=True)
class CheckResult:
    """What the checker made of one response: how many claims it checked and the unsupported ones."""

    claims: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def unsupported(self) -> bool:
        return bool(self.findings)


class CatalogIndex:
    """Catalog records indexed for claim matching: title and author patterns, aliases, name words."""

    def __init__(self, records: Sequence[dict]):
        if not records:
            raise ValueError("catalog: need at least one record")
        self.records = list(records)
        self.authors = sorted({author for record in self.records for author in record["authors"]}, key=len,
                              reverse=True)
        self.author_index = {author: i for i, author in enumerate(self.authors)}
        self.title_names: list[str] = []
        self.title_records: list[dict] = []
        titles = {fold(record["title"]) for record in self.records}
        heads = Counter(fold(record["title"]).split(":")[0].strip() for record in self.records)
        for record in self.records:
            folded = fold(record["title"])
            self._add_name(folded, record)
            head = folded.split(":")[0].strip()
            if head != folded and len(head) >= 4 and head not in titles and heads[head] == 1:
                self._add_name(head, record)
        order = sorted(range(len(self.title_names)), key=lambda i: len(self.title_names[i]), reverse=True)
        self._title_patterns = [(i, self._title_pattern(self.title_names[i])) for i in order]
        self._author_pattern = re.compile(
            r"(?<!\w)(" + "|".join(re.escape(fold(a)) for a in self.authors) + r")(?!\w)")
        self.known_titles = {name.casefold() for name in self.title_names}

    def _add_name(self, name: str, record: dict) -> None:
        self.title_names.append(name)
        self.title_records.append(record)

    @staticmethod
    def _title_pattern(name: str) -> re.Pattern[str]:
        escaped = re.escape(name)
        if len(name) == 1:
            return re.compile(rf"(?<=[*_\"]){escaped}(?=[*_\"])")
        flags = re.IGNORECASE if len(name.split()) >= CASE_INSENSITIVE_MIN_WORDS else 0
        return re.compile(rf"(?<!\w){escaped}(?!\w)" if name[-1].isalnum() or name[-1] == "'"
                          else rf"(?<!\w){escaped}", flags)

    def mask(self, text: str) -> str:
        """Replace author names and then catalog titles by tokens (longest first, no overlaps)."""
        text = self._author_pattern.sub(lambda m: f"{_T_OPEN}A{self.author_index[self._author(m.group())]}"
                                                  f"{_T_CLOSE}", text)
        for i, pattern in self._title_patterns:
            text = pattern.sub(f"{_T_OPEN}T{i}{_T_CLOSE}", text)
        return text

    def _author(self, folded: str) -> str:
        return next(a for a in self.authors if fold(a) == folded)

    def unmask(self, text: str) -> str:
        text = _TITLE_TOKEN.sub(lambda m: self.title_records[int(m.group(1))]["title"], text)
        return _AUTHOR_TOKEN.sub(lambda m: self.authors[int(m.group(1))], text)

    def is_catalog_title(self, text: str) -> bool:
        return fold(text).strip(" *_\"'.,!?:;").casefold() in self.known_titles


Catalog = Sequence[dict] | pa.Table | CatalogIndex
"""What the checker checks against: catalog records (core.catalog's contract), as dicts or a table, or their index."""


def as_catalog_index(catalog: Catalog) -> CatalogIndex:
    """`catalog` indexed for claim matching (an index is returned as it is)."""
    if isinstance(catalog, CatalogIndex):
        return catalog
    if isinstance(catalog, pa.Table):
        return CatalogIndex(catalog.to_pylist())
    return CatalogIndex(catalog)


def _number(text: str) -> int:
    return int(text) if text.isdigit() else _NUMBER_WORDS[text.lower()]


def _looks_like_title(text: str) -> bool:
    """Title-like: starts with a capital or digit, 1-8 words, most long words capitalised, not a sentence,
    no store vocabulary, not a pronoun or common sentence opener."""
    text = text.strip()
    words = text.split()
    if not words or len(words) > 8 or not (text[0].isupper() or text[0].isdigit()) or text[-1] in ".:;,":
        return False
    lowered = {w.strip("!?.,'\"").lower() for w in words}
    if lowered & _STORE_WORDS or (len(words) == 1 and words[0].strip("!?.,'\"").lower() in _NON_TITLE_STARTERS):
        return False
    long_words = [w for w in words if len(w) >= 4]
    return not long_words or sum(w[0].isupper() or w[0].isdigit() for w in long_words) / len(long_words) >= 0.5


def _strip_starters(phrase: str) -> str:
    words = phrase.split()
    while words and words[0].strip("!?.,'\"").lower() in _NON_TITLE_STARTERS:
        words.pop(0)
    return " ".join(words)


def _person_like(name: str) -> bool:
    words = name.split()
    return 2 <= len(words) <= 4 and not any(w.lower().strip(".") in _NON_NAME_WORDS for w in words)


@dataclass
class _Claim:
    start: int
    kind: str
    text: str
    value: object


def _volume_claims(sentence: str) -> list[_Claim]:
    claims = []
    for match in _VOLUMES_AFTER.finditer(sentence):
        lead, tail = sentence[: match.start()], sentence[match.end():]
        hyphenated = "-" in match.group() and _COUNT_TAIL.match(tail)
        is_count = (_COUNT_LEAD.search(lead) or _COUNT_TAIL.match(tail) or hyphenated)
        if is_count and not _NOT_COUNT_LEAD.search(lead) and not _NOT_COUNT_TAIL.match(tail):
            claims.append(_Claim(match.start(), "volume_count", match.group(), _number(match.group(1))))
    return claims


def _price_claims(sentence: str) -> list[_Claim]:
    claims = []
    for match in _MONEY.finditer(sentence):
        amount = float((match.group(1) or match.group(2)).replace(",", ""))
        lead, tail = sentence[: match.start()], sentence[match.end():]
        if _MONEY_SKIP_LEAD.search(lead):
            continue
        if set_match := _MONEY_SET_TAIL.match(tail):
            claims.append(_Claim(match.start(), "set_price", match.group() + set_match.group(),
                                 (amount, _number(set_match.group(1)))))
        elif full := _MONEY_FULL_SET_TAIL.match(tail):
            claims.append(_Claim(match.start(), "set_price", match.group() + full.group(), (amount, None)))
        elif _MONEY_UNIT_LEAD.search(lead) or _MONEY_UNIT_TAIL.match(tail):
            claims.append(_Claim(match.start(), "price", match.group(), amount))
    return claims


def _stock_claims(sentence: str) -> list[_Claim]:
    claims: list[_Claim] = []
    taken: list[tuple[int, int]] = []

    def free(match: re.Match[str]) -> bool:
        return all(match.end() <= start or match.start() >= end for start, end in taken)

    for match in _STOCK_COUNT.finditer(sentence):
        if not _STOCK_SKIP_LEAD.search(sentence[: match.start()]):
            claims.append(_Claim(match.start(), "stock_count", match.group(), int(match.group(1))))
        taken.append(match.span())
    for match in _OUT_OF_STOCK.finditer(sentence):
        if free(match) and not _STOCK_SKIP_LEAD.search(sentence[: match.start()]):
            claims.append(_Claim(match.start(), "in_stock", match.group(), False))
        taken.append(match.span())
    for match in _IN_STOCK.finditer(sentence):
        if free(match) and not _STOCK_SKIP_LEAD.search(sentence[: match.start()]):
            claims.append(_Claim(match.start(), "in_stock", match.group(), True))
    return claims


def _status_claims(sentence: str) -> list[_Claim]:
    claims = []
    ongoing_spans = []
    for match in _STATUS_ONGOING.finditer(sentence):
        claims.append(_Claim(match.start(), "status", match.group(), "ongoing"))
        ongoing_spans.append(match.span())
    for match in _STATUS_COMPLETED.finditer(sentence):
        inside = any(s <= match.start() < e for s, e in ongoing_spans)
        if not inside and not _NEGATION_LEAD.search(sentence[: match.start()]):
            claims.append(_Claim(match.start(), "status", match.group(), "completed"))
    for match in _STATUS_HIATUS.finditer(sentence):
        if not _NEGATION_LEAD.search(sentence[: match.start()]):
            claims.append(_Claim(match.start(), "status", match.group(), "hiatus"))
    return claims


def _author_claims(sentence: str, index: CatalogIndex) -> list[_Claim]:
    claims = []
    for match in _BY_AUTHORS.finditer(sentence):
        names = re.split(r",\s*|\s+and\s+|\s*&\s*", match.group(1))
        for name in names:
            token = _AUTHOR_TOKEN.fullmatch(name.strip())
            if token:
                claims.append(_Claim(match.start(), "author", index.unmask(match.group()),
                                     index.authors[int(token.group(1))]))
            elif _person_like(name.strip()):
                claims.append(_Claim(match.start(), "author", index.unmask(match.group()), name.strip()))
    for match in _AUTHOR_SUBJECT.finditer(sentence):
        author = index.authors[int(match.group(1) or match.group(2))]
        claims.append(_Claim(match.start(), "author", index.unmask(match.group()), author))
    return claims


def _unknown_titles(sentence: str, has_claims: bool, index: CatalogIndex) -> list[tuple[int, str]]:
    """(position, text) of title-like text that is not a catalog title."""
    found: list[tuple[int, str]] = []
    for match in _EMPHASIS.finditer(sentence):
        inner = next(g for g in match.groups() if g is not None)
        if _ANY_TOKEN.search(inner) or index.is_catalog_title(inner):
            continue
        if _looks_like_title(inner):
            found.append((match.start(), inner.strip()))
    for match in _BY_AUTHORS.finditer(sentence):
        names = re.split(r",\s*|\s+and\s+|\s*&\s*", match.group(1))
        if not any(_AUTHOR_TOKEN.fullmatch(n.strip()) or _person_like(n.strip()) for n in names):
            continue
        before = sentence[: match.start()] + "by "
        phrase_match = _PHRASE_BEFORE_BY.search(before)
        if phrase_match and not _ANY_TOKEN.search(phrase_match.group(1)):
            phrase = _strip_starters(phrase_match.group(1).strip(" ,:;-"))
            if phrase and _looks_like_title(phrase) and not index.is_catalog_title(phrase):
                found.append((phrase_match.start(), phrase))
    if has_claims and not _TITLE_TOKEN.search(sentence):
        subject = _SUBJECT_CLAIM.match(sentence)
        if subject and not _ANY_TOKEN.search(subject.group(1)):
            phrase = _strip_starters(subject.group(1))
            if phrase and _looks_like_title(phrase) and not index.is_catalog_title(phrase):
                found.append((subject.start(1), phrase))
    unique: dict[str, int] = {}
    for position, text in found:
        unique.setdefault(text, position)
    return [(position, text) for text, position in unique.items()]


def _money(value: float) -> str:
    return f"${value:.2f}"


def _verify(claim: _Claim, record: dict, index: CatalogIndex) -> Finding | None:
    title = record["title"]
    if claim.kind == "author":
        authors = list(record["authors"])
        name = str(claim.value)
        if name in authors:
            return None
        name_words = {w.lower() for w in fold(name).split()}
        if name not in index.authors and name_words & {w.lower() for a in authors for w in fold(a).split()}:
            return None
        return Finding("wrong_author", claim.text, title, ", ".join(authors))
    if claim.kind == "volume_count":
        ok = claim.value == record["volumes"]
        return None if ok else Finding("wrong_volume_count", claim.text, title, f"{record['volumes']} volumes")
    if claim.kind == "price":
        ok = abs(float(claim.value) - record["price_usd"]) <= PRICE_TOLERANCE  # type: ignore[arg-type]
        return None if ok else Finding("wrong_price", claim.text, title, f"{_money(record['price_usd'])} per volume")
    if claim.kind == "set_price":
        amount, count = claim.value  # type: ignore[misc]
        count = record["volumes"] if count is None else count
        expected = record["price_usd"] * count
        ok = abs(amount - expected) <= PRICE_TOLERANCE * count
        return None if ok else Finding("wrong_price", claim.text, title, f"{_money(expected)} for {count} volumes")
    if claim.kind == "in_stock":
        ok = claim.value == (record["stock"] > 0)
        state = f"in stock ({record['stock']} left)" if record["stock"] > 0 else "out of stock"
        return None if ok else Finding("wrong_stock", claim.text, title, state)
    if claim.kind == "stock_count":
        ok = claim.value == record["stock"]
        return None if ok else Finding("wrong_stock", claim.text, title, f"{record['stock']} in stock")
    if claim.kind == "status":
        status = record["status"]
        ok = claim.value == status or (claim.value == "ongoing" and status == "hiatus")
        return None if ok else Finding("wrong_status", claim.text, title, status)
    raise ValueError(f"unknown claim kind {claim.kind!r}")


def check_response(text: str, catalog: Catalog) -> CheckResult:
    """Check every recognised claim of one response against the catalog (see the module docstring)."""
    index = as_catalog_index(catalog)
    masked = index.mask(fold(text or ""))
    claims_checked = 0
    findings: list[Finding] = []
    carried: int | None = None
    for sentence in _SENTENCE_END.split(masked):
        if not sentence.strip():
            continue
        claims = (_author_claims(sentence, index) + _volume_claims(sentence) + _price_claims(sentence)
                  + _stock_claims(sentence) + _status_claims(sentence))
        titles = [(m.start(), int(m.group(1))) for m in _TITLE_TOKEN.finditer(sentence)]
        unknown = _unknown_titles(sentence, bool(claims), index)
        for _, name in unknown:
            claims_checked += 1
            findings.append(Finding("unknown_title", index.unmask(sentence.strip())[:200], name,
                                    "a title in the catalog"))
        if unknown and not titles:
            carried = None
            continue
        for claim in claims:
            before = [t for position, t in titles if position < claim.start]
            after = [t for position, t in titles if position > claim.start]
            if before:
                bound: int | None = before[-1]
            elif after:
                bound = after[0]
            elif carried is not None and _ANAPHOR.search(sentence):
                bound = carried
            else:
                continue
            claims_checked += 1
            if (finding := _verify(claim, index.title_records[bound], index)) is not None:
                findings.append(finding)
        if titles:
            carried = titles[-1][1]
    return CheckResult(claims_checked, findings)


def check_responses(
    responses: Iterable[str],
    catalog: Catalog,
    response_ids: Sequence[str | None] | None = None,
) -> tuple[pa.Table, dict[str, float]]:
    """Check many responses: a FACT_CHECK table (one row per response) and a summary.

    summary: responses, responses_with_findings, hallucination_rate = responses_with_findings / responses
    (the "catalog hallucination rate"), claims, findings, findings_<kind> for every kind in FINDING_KINDS,
    responses_without_claims, empty_responses (null, empty or whitespace: no answer at all, so nothing to
    check), failure_rate = (responses_with_findings + empty_responses) / responses.
    """
    from mangadistill.response.contracts import FACT_CHECK

    index = as_catalog_index(catalog)
    rows = []
    by_kind: Counter[str] = Counter()
    empty = 0
    for row, text in enumerate(responses):
        empty += not (text or "").strip()
        result = check_response(text, index)
        by_kind.update(f.kind for f in result.findings)
        rows.append({
            "row": row, "response_id": None if response_ids is None else response_ids[row],
            "n_claims": result.claims, "n_findings": len(result.findings), "unsupported": result.unsupported,
            "findings": [asdict(f) for f in result.findings],
        })
    table = pa.Table.from_pylist(rows, schema=FACT_CHECK)
    n = len(rows)
    flagged = sum(r["unsupported"] for r in rows)
    summary: dict[str, float] = {
        "responses": n,
        "responses_with_findings": flagged,
        "hallucination_rate": flagged / n if n else float("nan"),
        "claims": sum(r["n_claims"] for r in rows),
        "findings": sum(r["n_findings"] for r in rows),
        "responses_without_claims": sum(r["n_claims"] == 0 for r in rows),
        "empty_responses": empty,
        "failure_rate": (flagged + empty) / n if n else float("nan"),
    }
    summary.update({f"findings_{kind}": by_kind[kind] for kind in FINDING_KINDS})
    return table, summary


def findings_table(fact_check: pa.Table) -> pa.Table:
    """Flatten a FACT_CHECK table into FACT_FINDINGS: one row per finding."""
    from mangadistill.response.contracts import FACT_FINDINGS

    rows = [{"row": r["row"], "response_id": r["response_id"], **f}
            for r in fact_check.to_pylist() for f in r["findings"]]
    return pa.Table.from_pylist(rows, schema=FACT_FINDINGS)


RESPONSE_COLUMN = "response"
ID_COLUMNS = ("response_id", "prompt_id", "id")


def score_responses_file(
    uri: str, catalog: Catalog, column: str = RESPONSE_COLUMN,
) -> tuple[pa.Table, dict[str, float]]:
    """Score a responses file (JSONL or parquet, local or gs://) with a `response` column.

    Returns the FACT_CHECK table (response_id from the first of response_id / prompt_id / id present) and the
    summary of `check_responses`. A missing column raises DataContractError naming the file and the column;
    a null response is checked as an empty one (no claims) and counted in empty_responses.
    """
    table = storage.read_table(uri)
    if column not in table.column_names:
        raise DataContractError(uri, column, None, f"missing column; found {', '.join(table.column_names)}")
    if table.num_rows == 0:
        raise DataContractError(uri, None, None, "empty file: no responses to score")
    id_column = next((name for name in ID_COLUMNS if name in table.column_names), None)
    ids = None if id_column is None else [None if v is None else str(v) for v in table.column(id_column).to_pylist()]
    texts = ["" if v is None else str(v) for v in table.column(column).to_pylist()]
    return check_responses(texts, catalog, ids)


def format_summary(summary: dict[str, float]) -> str:
    """Human-readable lines of a fact-check summary."""
    lines = [
        f"responses: {int(summary['responses'])}",
        f"catalog hallucination rate: {summary['hallucination_rate']:.2%} "
        f"({int(summary['responses_with_findings'])} responses with an unsupported claim)",
        f"claims checked: {int(summary['claims'])}, unsupported: {int(summary['findings'])}",
        f"empty or null responses: {int(summary['empty_responses'])}",
        f"failure rate: {summary['failure_rate']:.2%} (responses with an unsupported claim, plus empty or null "
        "responses, over all responses)",
    ]
    lines += [f"  {kind}: {int(summary[f'findings_{kind}'])}" for kind in FINDING_KINDS if summary[f"findings_{kind}"]]
    return "\n".join(lines)


EXIT_OVER_THRESHOLD = 1
"""`mangadistill check-facts` exit status when the failure rate is above --fail-over."""
EXIT_UNREADABLE = 2
"""`mangadistill check-facts` exit status when the check could not run: the responses file or the catalog
cannot be read (missing, not a table, no `response` column, no rows) or --findings-out cannot be written."""


def check_facts_command(
    uri: str, catalog: Catalog, findings_out: str | None = None, fail_over: float | None = None,
) -> int:
    """What `mangadistill check-facts FILE` runs: score the file against `catalog`, print the summary and up to
    20 findings, optionally write the FACT_FINDINGS table to `findings_out`. Returns the exit status: 0, or
    EXIT_OVER_THRESHOLD when `fail_over` is given and the failure rate (empty and null responses count as
    failures) is above it. An unreadable input raises (StorageError, DataContractError)."""
    per_row, summary = score_responses_file(uri, catalog)
    print(format_summary(summary))
    flat = findings_table(per_row)
    for finding in flat.slice(0, 20).to_pylist():
        print(json.dumps(finding, ensure_ascii=False))
    if findings_out:
        storage.write_table(flat, findings_out)
    if fail_over is None:
        return 0
    failed = summary["failure_rate"] > fail_over
    print(f"failure rate {summary['failure_rate']:.2%} {'>' if failed else '<='} --fail-over {fail_over:.2%}: "
          f"{'FAIL' if failed else 'pass'}")
    return EXIT_OVER_THRESHOLD if failed else 0
