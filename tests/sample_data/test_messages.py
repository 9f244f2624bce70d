import math
import random
import re
from collections import Counter

import pytest

from mangadistill.core.contracts import validate_table
from mangadistill.intent.contracts import LABELLED_MESSAGES, MESSAGES
from mangadistill.intent.labels import INTENTS, RARE_INTENTS
from mangadistill.sample_data.messages import (
    AMBIGUOUS_SHARE,
    NO_NOISE,
    PRIMARY_PROB_RANGE,
    RARE_MAX_SHARE,
    SECONDARY_INTENTS,
    SECONDARY_PROB_RANGE,
    TRUTH,
    NoiseConfig,
    add_typo,
    apply_noise,
    build_sample_splits,
    core_phrasings,
    draw_intent_counts,
    generate_messages,
)

TITLES = [
    {"title": "Frieren: Beyond Journey's End", "authors": ["Kanehito Yamada", "Tsukasa Abe"],
     "genres": ["Adventure", "Fantasy"], "volumes": 13},
    {"title": "One Piece", "authors": ["Eiichiro Oda"], "genres": ["Action", "Adventure"], "volumes": 108},
    {"title": "Yotsuba&!", "authors": ["Kiyohiko Azuma"], "genres": ["Comedy", "Slice of Life"],
     "volumes": 15},
    {"title": "Vinland Saga", "authors": ["Makoto Yukimura"], "genres": ["Historical", "Drama"],
     "volumes": 14},
    {"title": "Monster", "authors": ["Naoki Urasawa"], "genres": ["Mystery", "Thriller"], "volumes": 18},
]
HIGH_RISK = re.compile(
    r"chargeback|lawyer|attorney|legal|\bsue\b|fraud|scam|manager|supervisor|\bbbb\b|better business bureau|"
    r"consumer protection|consumer office|dispute|reverse the charge|police|report(ing)? you|complaint|"
    r"illegal|stole|steal",
    re.IGNORECASE,
)
INNOCENT_RISK_WORDS = re.compile(r"\b(bank|manager|fraud|lawyer)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def big_draw() -> list[dict]:
    return generate_messages(5000, 11, TITLES)


def _template_regex(template: str) -> re.Pattern[str]:
    """The template with each {slot} matching any text."""
    return re.compile(".+?".join(re.escape(part) for part in re.split(r"\{\w+\}", template)), re.IGNORECASE)


def _template(core_id: str) -> str:
    intent, index = core_id.split(":")
    return core_phrasings(intent, "all")[int(index)]


def test_same_seed_same_messages_other_seed_other_messages():
    first = generate_messages(300, 5, TITLES)
    assert first == generate_messages(300, 5, TITLES)
    other = generate_messages(300, 6, TITLES)
    same_text = sum(a["text"] == b["text"] for a, b in zip(first, other, strict=True))
    assert same_text < 30


def test_every_intent_appears_and_rare_intents_stay_rare(big_draw):
    counts = Counter(m["label"] for m in big_draw)
    assert set(counts) == set(INTENTS)
    for intent in RARE_INTENTS:
        assert 0 < counts[intent] <= RARE_MAX_SHARE * len(big_draw)
    top_two = {intent for intent, _ in counts.most_common(2)}
    assert top_two == {"recommendation", "product_question"}


@pytest.mark.parametrize("n", [0, 7, 100, 999, 5000])
def test_intent_counts_sum_to_n_and_cap_rare_intents(n):
    for seed in range(20):
        counts = draw_intent_counts(n, random.Random(seed))
        assert sum(counts.values()) == n
        assert all(counts[intent] <= math.floor(RARE_MAX_SHARE * n) for intent in RARE_INTENTS)


def test_intent_mix_is_jittered_by_seed():
    draws = {tuple(draw_intent_counts(5000, random.Random(seed)).values()) for seed in range(5)}
    assert len(draws) == 5


def test_ambiguous_messages_carry_a_soft_distribution(big_draw):
    ambiguous = [m for m in big_draw if m["ambiguous"]]
    assert abs(len(ambiguous) / len(big_draw) - AMBIGUOUS_SHARE) < 0.02
    for m in ambiguous:
        probs = dict(zip(INTENTS, m["true_probs"], strict=True))
        assert math.isclose(sum(m["true_probs"]), 1.0, abs_tol=1e-9)
        assert min(m["true_probs"]) >= 0
        assert m["secondary_label"] in SECONDARY_INTENTS[m["label"]]
        assert PRIMARY_PROB_RANGE[0] <= probs[m["label"]] <= PRIMARY_PROB_RANGE[1]
        assert SECONDARY_PROB_RANGE[0] <= probs[m["secondary_label"]] <= SECONDARY_PROB_RANGE[1]
        assert probs[m["label"]] > probs[m["secondary_label"]] > max(
            p for intent, p in probs.items() if intent not in (m["label"], m["secondary_label"])
        )
    for m in big_draw:
        if not m["ambiguous"]:
            assert m["secondary_label"] is None
            assert m["true_probs"] == [1.0 if intent == m["label"] else 0.0 for intent in INTENTS]


def test_heldout_and_train_core_phrasings_are_disjoint():
    for intent in INTENTS:
        train, heldout = set(core_phrasings(intent, "train")), set(core_phrasings(intent, "heldout"))
        assert len(core_phrasings(intent, "all")) >= 40
        assert not train & heldout
        assert train | heldout == set(core_phrasings(intent, "all"))
        assert 0.2 <= len(heldout) / (len(train) + len(heldout)) <= 0.3
    train_msgs = generate_messages(800, 3, TITLES, pool="train")
    heldout_msgs = generate_messages(800, 3, TITLES, pool="heldout")
    train_ids = {core for m in train_msgs for core in m["core_ids"]}
    heldout_ids = {core for m in heldout_msgs for core in m["core_ids"]}
    assert not train_ids & heldout_ids
    assert {m["pool"] for m in train_msgs} == {"train"}
    assert {m["pool"] for m in heldout_msgs} == {"heldout"}
    for m in heldout_msgs:
        intent = m["core_ids"][0].split(":")[0]
        assert _template(m["core_ids"][0]) in core_phrasings(intent, "heldout")


def test_pool_all_mixes_both_pools():
    pools = Counter(m["pool"] for m in generate_messages(1000, 4, TITLES, pool="all"))
    assert 0.15 < pools["heldout"] / 1000 < 0.4


def test_text_contains_its_core_phrasings_when_noise_is_off():
    for m in generate_messages(600, 8, TITLES, pool="all", noise=NO_NOISE):
        assert m["core_ids"][0].startswith(m["label"] + ":")
        for core_id in m["core_ids"]:
            assert _template_regex(_template(core_id)).search(m["text"]), (core_id, m["text"])


def test_catalog_titles_are_slotted_in():
    texts = " ".join(m["text"] for m in generate_messages(500, 9, TITLES, noise=NO_NOISE))
    for record in TITLES:
        assert record["title"].split(":")[0] in texts


def test_typos_happen_at_the_configured_rate():
    clean = generate_messages(2000, 12, TITLES, noise=NO_NOISE)
    noisy = generate_messages(2000, 12, TITLES, noise=NoiseConfig(0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0))
    changed = [(a["text"], b["text"]) for a, b in zip(clean, noisy, strict=True) if a["text"] != b["text"]]
    assert abs(len(changed) / len(clean) - 0.3) < 0.04
    assert all(abs(len(a) - len(b)) <= 3 for a, b in changed)


def test_add_typo_always_changes_the_word():
    rng = random.Random(0)
    for word in ("order", "Manga", "book", "aaa", "refund", "shipping"):
        for _ in range(200):
            typo = add_typo(word, rng)
            assert typo != word
            assert abs(len(typo) - len(word)) <= 1


@pytest.mark.parametrize(
    ("noise", "check"),
    [
        (NoiseConfig(lowercase_prob=1.0, caps_prob=0, emoji_prob=0), str.islower),
        (NoiseConfig(caps_prob=1.0, escalation_caps_prob=1.0, emoji_prob=0), str.isupper),
        (NoiseConfig(strip_punct_prob=1.0, caps_prob=0, escalation_caps_prob=0, emoji_prob=0),
         lambda text: not re.search(r"[.,!?']", text)),
        (NoiseConfig(emoji_prob=1.0), lambda text: not text[-1].isascii()),
    ],
)
def test_each_noise_kind_applies(noise, check):
    text = "Hello, where's my order #MA-12345? It's been 9 days."
    for seed in range(20):
        assert check(apply_noise(text, "order_tracking", random.Random(seed), noise))


def test_escalations_often_but_not_always_use_high_risk_phrases():
    clean = generate_messages(5000, 11, TITLES, noise=NO_NOISE)
    escalations = [m["text"] for m in clean if m["label"] == "escalation" and not m["ambiguous"]]
    risky = sum(bool(HIGH_RISK.search(text)) for text in escalations)
    assert 0.35 < risky / len(escalations) < 0.9


def test_other_intents_use_bank_and_manager_innocently():
    clean = generate_messages(5000, 11, TITLES, noise=NO_NOISE)
    innocent = Counter(
        m["label"] for m in clean
        if m["label"] != "escalation" and not m["ambiguous"] and INNOCENT_RISK_WORDS.search(m["text"])
    )
    assert len(innocent) >= 5


def test_texts_are_distinct():
    for pool in ("train", "all"):
        messages = generate_messages(2000, 13, TITLES, pool=pool)
        assert len({m["text"] for m in messages}) >= 0.95 * len(messages)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="pool must be one of"):
        generate_messages(10, 1, TITLES, pool="test")
    with pytest.raises(ValueError, match=r"titles\[1\]: missing key 'genres'"):
        generate_messages(10, 1, [TITLES[0], {"title": "X", "authors": ["Y"], "volumes": 1}])
    with pytest.raises(ValueError, match="at least one catalog record"):
        generate_messages(10, 1, [])
    with pytest.raises(ValueError, match="unknown intent"):
        core_phrasings("refund")


def test_sample_splits_keep_their_contracts():
    splits = build_sample_splits(seed=3, n_labelled=300, n_production=400, n_eval=201, titles=TITLES)
    schemas = {
        "labelled": LABELLED_MESSAGES, "production_log": MESSAGES, "production_truth": TRUTH,
        "eval": LABELLED_MESSAGES, "eval_truth": TRUTH,
    }
    assert set(splits) == set(schemas)
    for name, schema in schemas.items():
        checked = validate_table(splits[name], schema, name, on_bad_rows="fail")
        assert checked.quarantine.num_rows == 0
        assert checked.table.num_rows == splits[name].num_rows
    sizes = {"labelled": 300, "production_log": 400, "eval": 201}
    assert {name: splits[name].num_rows for name in sizes} == sizes
    ids = [i for name in sizes for i in splits[name]["message_id"].to_pylist()]
    assert len(ids) == len(set(ids))
    assert splits["production_truth"]["message_id"] == splits["production_log"]["message_id"]
    assert splits["eval_truth"]["label"] == splits["eval"]["label"]
    for truth in ("production_truth", "eval_truth"):
        assert all(abs(sum(p) - 1.0) < 1e-3 for p in splits[truth]["true_probs"].to_pylist())
    heldout = sum(i.startswith("eval-h-") for i in splits["eval"]["message_id"].to_pylist())
    assert heldout >= splits["eval"].num_rows / 2
    again = build_sample_splits(seed=3, n_labelled=300, n_production=400, n_eval=201, titles=TITLES)
    assert all(again[name].equals(splits[name]) for name in schemas)


def test_sample_order_numbers_are_the_stores_format_and_never_look_like_a_sku():
    from mangadistill.core.redaction import redact_text

    texts = build_sample_splits(seed=11, n_labelled=400, n_production=400, n_eval=100)["labelled"].column(
        "text").to_pylist()
    with_orders = [text for text in texts if re.search(r"\d{8}", text)]
    assert len(with_orders) >= 10
    assert not [text for text in texts if re.search(r"\bMA[-\s]?\d{5}\b", text, re.IGNORECASE)]
    leaked = [text for text in with_orders if re.search(r"\d{8}", redact_text(text).text)]
    assert not leaked, leaked[:3]
