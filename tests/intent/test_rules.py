"""Escalation and account-security rules: what they catch, what they leave alone, how bad files fail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mangadistill.intent.labels import INTENTS
from mangadistill.intent.rules import RuleHit, RulesError, load_rules, parse_rules

ESCALATION = [
    "I'm going to file a chargeback if this isn't fixed",
    "fine, I'll just do a charge-back",
    "I will dispute this charge with my bank",
    "I'm disputing it with my credit card company",
    "opening a paypal dispute right now",
    "I'm contacting my lawyer about this",
    "my attorney will be in touch",
    "I will take legal action against you",
    "I'm going to sue you",
    "I’ll sue",  # curly apostrophe
    "I'll take you to small claims court",
    "this store is a scam",
    "you're a bunch of frauds",
    "You scammed me out of $40",
    "I want to speak to a manager",
    "get me your manger now",  # typo
    "Let me talk to a real person",
    "can I speak with your supervisor",
    "transfer me to a human agent",
    "agent",
    "I'm reporting you to the BBB",
    "I will file a complaint with consumer protection",
    "reporting this to the FTC",
    "This is unacceptable and this is the last time I order from you",
    "I will never order from you again",
]
ACCOUNT_SECURITY = [
    "my account was hacked",
    "I think I got hacked",
    "my acct got hakced",  # typo
    "someone logged into my account",
    "somebody else has been using my account",
    "someone changed my password",
    "there's an unauthorized order on my account",
    "unauthorised purchase on my card",
    "there is an order I didn't make",
    "the password reset email never arrived",
    "I'm not getting the password reset link",
    "my 2FA code isn't working",
    "I didn't receive the verification code",
    "I got a phishing email pretending to be you",
]
INNOCENT = [
    "my bank declined my card",  # checkout_help
    "My card was charged twice at checkout",
    "Can my bank card be used for preorders?",
    "Do you have the new volume of Lawyer Rebellion?",
    "Is Ace Attorney volume 2 back in stock?",
    "recommend a manga about a lawyer",
    "Do you sell legal thriller manga?",
    "something like a legal action thriller, like Death Note",
    "Sue from my book club recommended Frieren, do you have it?",
    "I gave the gift card to Sue",
    "this is a manga about fraud, right?",
    "any manga about a con artist scam?",
    "Recommend a manga about hackers",
    "Is the manager in Oshi no Ko a villain?",
    "Last time I ordered, it arrived in 2 days",
    "Can I order volume 2 again?",
    "I'm not able to order it again",
    "Someone recommended Chainsaw Man to me, is it good?",
    "How do I reset my password?",
    "How do I change my email address?",
    "What is the security code on my card?",
    "Can I use a discount code at checkout?",
    "Where is my order? I placed it last week",
    "I want to return this, the spine is damaged",
]


@pytest.fixture(scope="module")
def rules():
    return load_rules()


@pytest.mark.parametrize("text", ESCALATION)
def test_high_risk_phrases_are_escalation(rules, text):
    assert rules.intent_for(text) == "escalation", rules.match(text)


@pytest.mark.parametrize("text", ACCOUNT_SECURITY)
def test_account_security_phrases_hit(rules, text):
    assert rules.intent_for(text) == "account_security", rules.match(text)


@pytest.mark.parametrize("text", INNOCENT)
def test_innocent_hard_negatives_hit_nothing(rules, text):
    assert rules.match(text) == []
    assert rules.intent_for(text) is None


def test_escalation_outranks_account_security(rules):
    text = "my account was hacked and I'm filing a chargeback"
    hits = rules.match(text)
    assert {hit.intent for hit in hits} == {"escalation", "account_security"}
    assert rules.intent_for(text) == "escalation"


def test_hits_name_the_rule(rules):
    assert rules.match("CHARGEBACK incoming") == [RuleHit("esc-chargeback", "escalation")]


def test_patterns_never_match_inside_a_longer_word():
    rules = parse_rules(
        'version: "1"\nrules: [{id: r, intent: escalation, description: d, patterns: [sue]}]', "inline.yaml"
    )
    assert rules.intent_for("Sue, please") == "escalation"
    assert rules.intent_for("what is the issue with pursuer") is None


def test_packaged_file_is_versioned_and_valid():
    rules = load_rules()
    assert re.fullmatch(r"\d{4}\.\d+\.\d+", rules.version)
    assert {rule.intent for rule in rules.rules} == {"escalation", "account_security"}
    assert len({rule.id for rule in rules.rules}) == len(rules.rules)
    assert all(rule.intent in INTENTS and rule.description for rule in rules.rules)


def test_load_rules_reads_a_path_through_storage(tmp_path: Path):
    path = tmp_path / "custom.yaml"
    path.write_text('version: "9.9.9"\nrules: [{id: x, intent: faq, description: d, patterns: [open hours]}]')
    rules = load_rules(str(path))
    assert rules.version == "9.9.9"
    assert rules.source == str(path)
    assert rules.intent_for("What are your OPEN HOURS?") == "faq"


def _rules_yaml(**rule_overrides) -> str:
    rule = {"id": "esc-test", "intent": "escalation", "description": "test", "patterns": ["charge ?back"]}
    rule.update(rule_overrides)
    return yaml.safe_dump({"version": "2026.1.0", "rules": [rule]})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: '1'\nrules: [unclosed", r"bad\.yaml: not valid YAML"),
        ("- just\n- a list\n", r"bad\.yaml: expected a mapping"),
        ("version: 2026.1\nrules: []\n", r"bad\.yaml: 'version' must be a non-empty quoted string"),
        ("version: '1'\nrules: []\n", r"bad\.yaml: 'rules' must be a non-empty list"),
        (_rules_yaml(intent="refund"), r"bad\.yaml: rule 'esc-test': unknown intent 'refund'"),
        (_rules_yaml(patterns=["(chargeback"]), r"bad\.yaml: rule 'esc-test': invalid regex '\(chargeback'"),
        (_rules_yaml(patterns=["a)(b"]), r"bad\.yaml: rule 'esc-test': invalid regex 'a\)\(b'"),
        (_rules_yaml(patterns=[]), r"rule 'esc-test': 'patterns' must be a non-empty list"),
        (_rules_yaml(pattern=["x"]), r"rule 'esc-test': unknown keys \['pattern'\]"),
        (_rules_yaml(description=""), r"rule 'esc-test': 'description' must be a non-empty string"),
    ],
)
def test_bad_files_fail_naming_file_rule_and_pattern(text, expected):
    with pytest.raises(RulesError, match=expected):
        parse_rules(text, "bad.yaml")


def test_duplicate_rule_ids_are_refused():
    rule = "{id: same, intent: faq, description: d, patterns: [hours]}"
    with pytest.raises(RulesError, match=r"dup\.yaml: rule 'same': duplicate id"):
        parse_rules(f"version: '1'\nrules: [{rule}, {rule}]", "dup.yaml")


def test_load_rules_names_the_file_for_bad_content(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text(_rules_yaml(intent="shipping"))
    with pytest.raises(RulesError, match=rf"{re.escape(str(path))}: rule 'esc-test': unknown intent"):
        load_rules(str(path))
