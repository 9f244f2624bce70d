"""Redaction of personal data: every kind and format, near-misses that must stay, generator ground truth."""

from __future__ import annotations

from collections import Counter

import pytest

from mangadistill.core.redaction import PII_KINDS, PLACEHOLDERS, is_card_number, luhn_valid, redact_text, redact_texts
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
    assert not is_card_number("4111-1111 1111-1111")  # mixed separators


def test_several_kinds_in_one_text_and_totals():
    texts = ["call (555) 123-4567 or mail a@b.com", "order MO-12345678, card 4111 1111 1111 1111", "nothing here"]
    redacted, kinds, totals = redact_texts(texts)
    assert redacted[0] == "call [PHONE] or mail [EMAIL]"
    assert kinds == [["email", "phone"], ["card", "order"], []]
    assert totals == {"email": 1, "card": 1, "phone": 1, "order": 1, "address": 0}
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
