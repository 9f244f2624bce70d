"""Evaluate a response student against the seed's Scenario 1 promotion gate and decide whether it is promoted.

Inputs are the fixed human-reviewed evaluation set (schemas.RESPONSE_EVAL: slices policy, escalation,
factuality) and, for every eval prompt, the answers of the student, of the base student (the untrained
student model) and of the teacher (schemas.TEACHER_RESPONSES, prompt_id = eval_id, with the cost the teacher
recorded). Metrics, by the names the gates YAML uses (resources/response_gates.yaml):

- teacher_preference_match: a pairwise LLM judge through the OpenAI-compatible API sees each prompt twice,
  (A = teacher, B = student) and (A = student, B = teacher). A judgment is a strict JSON object
  {"winner": "A" | "B" | "tie"}. match = (number of judgments in which the student's answer won or tied) /
  (2 × prompts): the mean over prompts of the mean over the two orders, so a judge that always picks position
  A scores exactly 0.5 and position bias cancels. A judgment that fails (unparseable after the client's
  retries, or no answer) counts as not a match and is reported (judge_failed_judgments,
  judge_unparseable_judgments); nothing is dropped. With guided choice (a judge served by vLLM or by
  `mangadistill serve-teacher`) the judge can only answer one of JUDGE_CHOICES, so no judgment is unparseable.
- teacher_preference_match_proxy: only when no judge is given and a proxy model is: the share of prompts whose
  student answer has cosine similarity >= PROXY_SIMILARITY_THRESHOLD to the teacher's answer (sentence
  embeddings, builtin "minilm-l6"). It is a different metric under a different name: the packaged gate on
  teacher_preference_match then fails as missing, unless the gates file gates the proxy metric instead.
- human_win_rate: from completed blinded A/B reviews (student vs base student; see `build_review_packet`):
  (student wins + ties / 2) / valid reviews. Every packet must have at least one valid review; otherwise the
  metric is missing and its gate fails with "awaiting human review".
- hallucination_rate: share of the student's eval answers with at least one unsupported catalog claim
  (`factcheck.check_responses`).
- cost_reduction = 1 − student cost per 1K / teacher cost per 1K, where student cost per 1K =
  hardware USD per hour / (tokens per second × 3600 / mean response tokens) × 1000 (measured throughput of the
  served student on that hardware, mean completion tokens of its eval answers, the hourly price from
  resources/serving_hardware.yaml), and teacher cost per 1K = mean recorded cost per teacher answer × 1000
  (or, for a self-hosted teacher priced 0 per token, the same throughput formula on its hardware).
- slice_<slice>_score: share of the slice's rows whose answer passes the slice check (`slice_check`);
  slice_<slice>_vs_base = student score − base student score, gated >= 0 (no slice may regress).

Diagnostics name each failure mode of the seed's table with detected yes / no / unknown, the evidence figure
and the seed's fix, word for word.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from string import Formatter
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import yaml

from mangadistill.core import report as r
from mangadistill.core import storage
from mangadistill.core.chat_api import AnswerRejected, ChatAPIFatalError, ChatCallFailed, ChatResult
from mangadistill.core.contracts import DataContractError, quarantine_table, validate_table
from mangadistill.core.events import distilled_model_eval, write_event
from mangadistill.core.gates import GateDecision, evaluate_gates, load_gates, packaged_gates_path
from mangadistill.response import factcheck
from mangadistill.response.contracts import (
    COMPLETED_REVIEWS,
    JUDGMENTS,
    MODEL_ANSWERS,
    RESPONSE_EVAL,
    RESPONSE_EVAL_SLICES,
    REVIEW_CHOICES,
    REVIEW_KEY,
    REVIEW_PACKET,
    TEACHER_RESPONSES,
)
from mangadistill.sample_data.catalog import catalog_records

logger = logging.getLogger(__name__)

SEED_EVENT_METRICS = ("human_win_rate", "hallucination_rate", "cost_reduction")
"""The metrics of the seed's production-log event, in its order."""
JUDGE_ORDERS = {"teacher_first": "B", "student_first": "A"}
"""Order name -> the position ("A" / "B") of the student's answer in it."""
JUDGE_WINNERS = ("A", "B", "tie")
JUDGE_CONSISTENCY_WARNING = 0.5
"""Below this share of order-consistent prompts the report warns that the judge judges positions."""
JUDGE_CHOICES = tuple(json.dumps({"winner": winner}) for winner in JUDGE_WINNERS)
"""The three judgments a guided-choice judge chooses from: {"winner": "A"}, {"winner": "B"}, {"winner": "tie"}."""
UNPARSEABLE = "unparseable judgment"
PROXY_METRIC = "teacher_preference_match_proxy"
PROXY_SIMILARITY_THRESHOLD = 0.8
REVIEW_MODELS = ("student", "base_student")
RARE_SLICE = "escalation"
"""The slice of rare behaviour (refusals and hand-offs): where dark knowledge would hurt first."""
SEED_FAILURE_MODES: dict[str, tuple[str, str]] = {
    "teacher hallucinations copied": ("student repeats wrong facts",
                                      "human filter and retrieval-grounded teacher prompts"),
    "student too small": ("high loss and weak eval", "increase size or use LoRA"),
    "dark knowledge hurts rare classes": ("rare recall drops", "blend hard labels and soft labels"),
    "cost win too small": ("serving cost barely changes", "quantize student or simplify architecture"),
}
"""The seed's Failure Modes table: failure -> (detection, fix), verbatim."""

_JUDGE_TAGS = ("question", "answer_a", "answer_b")
_JUDGE_TAG_LOOKALIKE = re.compile(r"<(\s*/?\s*(?:" + "|".join(_JUDGE_TAGS) + r")\b)", re.IGNORECASE)
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


# --- pairwise judge --------------------------------------------------------------------------------------


class ChatBackend(Protocol):
    """What the judge needs: `mangadistill.core.chat_api.ChatClient` fits (LocalChatModel too, without `validate`)."""

    model: str
    concurrency: int

    def complete(self, messages: Sequence[dict[str, str]], temperature: float = 0.0, max_tokens: int = 256,
                 **options: Any) -> ChatResult: ...


@dataclass(frozen=True)
class JudgePrompt:
    """The versioned judge prompt (resources/judge_prompt.yaml): `user` has {prompt}, {answer_a}, {answer_b}."""

    version: str
    system: str
    user: str
    max_tokens: int

    def messages(self, prompt: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
        """System and user turns; the three texts are defused so they cannot close their tags."""
        user = self.user.format(prompt=defuse_judge_tags(prompt), answer_a=defuse_judge_tags(answer_a),
                                answer_b=defuse_judge_tags(answer_b))
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


def load_judge_prompt(uri: str | None = None) -> JudgePrompt:
    """The judge prompt at `uri` (local or gs://), default the packaged resources/judge_prompt.yaml."""
    if uri:
        text, source = storage.read_text(uri), uri
    else:
        text = resources.files("mangadistill.resources").joinpath("judge_prompt.yaml").read_text("utf-8")
        source = "mangadistill/resources/judge_prompt.yaml"
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or not all(document.get(k) for k in ("version", "system", "user")):
        raise ValueError(f"{source}: a judge prompt needs 'version', 'system' and 'user'")
    fields = {name for _, name, _, _ in Formatter().parse(document["user"]) if name is not None}
    if fields != {"prompt", "answer_a", "answer_b"}:
        raise ValueError(f"{source}: 'user' must use exactly {{prompt}}, {{answer_a}}, {{answer_b}}; found {fields}")
    max_tokens = document.get("max_tokens", 48)
    if not isinstance(max_tokens, int) or max_tokens < 8:
        raise ValueError(f"{source}: 'max_tokens' must be an integer >= 8, got {max_tokens!r}")
    return JudgePrompt(str(document["version"]), str(document["system"]).strip(), str(document["user"]), max_tokens)


def defuse_judge_tags(text: str) -> str:
    """`<question>`, `</answer_a>` ... inside data become `‹question>`, so a text cannot end its block."""
    return _JUDGE_TAG_LOOKALIKE.sub(lambda m: "\u2039" + m.group(1), text)


def parse_judgment(content: str) -> str:
    """The winner ("A", "B" or "tie") of a judge answer, parsed strictly.

    The answer must be one JSON object (optionally inside a single ```json fence) with key "winner" valued
    exactly "A", "B" or "tie", and at most a string "reason" besides. Anything else raises AnswerRejected
    whose message starts with UNPARSEABLE.
    """
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        verdict = json.loads(text)
    except json.JSONDecodeError:
        raise AnswerRejected(f"{UNPARSEABLE}: not JSON: {content[:120]!r}") from None
    if not isinstance(verdict, dict) or set(verdict) - {"winner", "reason"} or "winner" not in verdict:
        raise AnswerRejected(f"{UNPARSEABLE}: expected {{\"winner\": ...}}, got {content[:120]!r}")
    if verdict["winner"] not in JUDGE_WINNERS:
        raise AnswerRejected(f"{UNPARSEABLE}: winner must be one of {JUDGE_WINNERS}, got {verdict['winner']!r}")
    if not isinstance(verdict.get("reason", ""), str):
        raise AnswerRejected(f"{UNPARSEABLE}: 'reason' must be a string")
    return verdict["winner"]


@dataclass(frozen=True)
class PreferenceResult:
    """All judgments (schemas.JUDGMENTS rows) and the figures derived from them (module docstring)."""

    judgments: list[dict]
    judge_model: str
    prompt_version: str

    @property
    def failed(self) -> int:
        return sum(j["winner"] is None for j in self.judgments)

    @property
    def unparseable(self) -> int:
        return sum(bool(j["error"]) and j["error"].startswith(UNPARSEABLE) for j in self.judgments)

    @property
    def match_rate(self) -> float:
        """Judgments where the student won or tied / all judgments (failures count as no match)."""
        if not self.judgments:
            return float("nan")
        return sum(bool(j["student_at_least_as_good"]) for j in self.judgments) / len(self.judgments)

    def outcome_shares(self, order: str | None = None) -> dict[str, float]:
        """Share of judgments (of one order, or all) won by the student, tied, won by the teacher, failed."""
        chosen = [j for j in self.judgments if order is None or j["order"] == order]
        counts: Counter[str] = Counter()
        for j in chosen:
            if j["winner"] is None:
                counts["failed"] += 1
            elif j["winner"] == "tie":
                counts["tie"] += 1
            else:
                counts["student preferred" if j["winner"] == j["student_position"] else "teacher preferred"] += 1
        total = len(chosen)
        return {name: counts[name] / total if total else float("nan")
                for name in ("student preferred", "tie", "teacher preferred", "failed")}

    def metrics(self) -> dict[str, float]:
        parsed = [j for j in self.judgments if j["winner"] is not None]
        by_prompt: dict[str, dict[str, bool]] = {}
        for j in parsed:
            by_prompt.setdefault(j["eval_id"], {})[j["order"]] = bool(j["student_at_least_as_good"])
        both = [orders for orders in by_prompt.values() if len(orders) == len(JUDGE_ORDERS)]
        return {
            "teacher_preference_match": self.match_rate,
            "judge_judgments": float(len(self.judgments)),
            "judge_failed_judgments": float(self.failed),
            "judge_unparseable_judgments": float(self.unparseable),
            "judge_position_a_share": (sum(j["winner"] == "A" for j in parsed) / len(parsed)
                                       if parsed else float("nan")),
            "judge_order_consistency": (sum(len(set(o.values())) == 1 for o in both) / len(both)
                                        if both else float("nan")),
        }


def judge_preference(
    judge: ChatBackend, eval_ids: Sequence[str], prompts: Sequence[str], teacher_answers: Sequence[str],
    student_answers: Sequence[str], judge_prompt: JudgePrompt | None = None, guided_choice: bool = False,
) -> PreferenceResult:
    """Judge every (teacher, student) pair in both orders, `judge.concurrency` requests at a time;
    guided_choice: ask for one of JUDGE_CHOICES (vLLM's guided_choice) instead of free text.

    A ChatCallFailed (including answers still unparseable after the client's retries) becomes a failed
    judgment with its reason; ChatAPIFatalError (bad key, URL or model) stops the evaluation.
    """
    judge_prompt = judge_prompt or load_judge_prompt()
    lengths = {len(eval_ids), len(prompts), len(teacher_answers), len(student_answers)}
    if len(lengths) != 1:
        raise ValueError(f"judge_preference: inputs of different lengths {sorted(lengths)}")
    tasks = [(i, order, position) for i in range(len(eval_ids)) for order, position in JUDGE_ORDERS.items()]

    def run(task: tuple[int, str, str]) -> dict:
        i, order, student_position = task
        pair = ((student_answers[i], teacher_answers[i]) if student_position == "A"
                else (teacher_answers[i], student_answers[i]))
        messages = judge_prompt.messages(prompts[i], *pair)
        winner, error = None, None
        try:
            result = judge.complete(messages, temperature=0.0, max_tokens=judge_prompt.max_tokens,
                                    validate=parse_judgment, label=f"judge {eval_ids[i]} {order}",
                                    **({"guided_choice": JUDGE_CHOICES} if guided_choice else {}))
            winner = parse_judgment(result.content)
        except ChatAPIFatalError:
            raise
        except ChatCallFailed as failure:
            error = failure.reason
        except AnswerRejected as rejected:
            error = str(rejected)
        at_least_as_good = None if winner is None else winner in (student_position, "tie")
        return {"eval_id": eval_ids[i], "order": order, "student_position": student_position, "winner": winner,
                "student_at_least_as_good": at_least_as_good, "error": error,
                "judge_prompt_version": judge_prompt.version}

    with ThreadPoolExecutor(max_workers=max(1, int(getattr(judge, "concurrency", 1)))) as pool:
        judgments = list(pool.map(run, tasks))
    for j in judgments:
        if j["error"]:
            logger.warning("judge %s %s failed: %s", j["eval_id"], j["order"], j["error"])
    return PreferenceResult(judgments, judge.model, judge_prompt.version)


@lru_cache(maxsize=2)
def _sentence_encoder(model_ref: str):
    """A sentence-transformers encoder for a builtin name, folder or gs:// prefix, loaded once per process."""
    from sentence_transformers import SentenceTransformer

    from mangadistill.core.models import resolve_model

    return SentenceTransformer(resolve_model(model_ref), device="cpu")


def similarity_proxy_match(
    student_answers: Sequence[str], teacher_answers: Sequence[str], model_ref: str = "minilm-l6",
    threshold: float = PROXY_SIMILARITY_THRESHOLD,
) -> tuple[float, np.ndarray]:
    """(share of pairs with cosine >= threshold, the cosines): an offline PROXY for preference match only."""
    if len(student_answers) != len(teacher_answers) or not student_answers:
        raise ValueError("similarity_proxy_match: need equally many student and teacher answers, at least one")
    encoder = _sentence_encoder(model_ref)
    student = encoder.encode(list(student_answers), normalize_embeddings=True, convert_to_numpy=True)
    teacher = encoder.encode(list(teacher_answers), normalize_embeddings=True, convert_to_numpy=True)
    cosines = np.sum(student * teacher, axis=1).astype(np.float64)
    return float(np.mean(cosines >= threshold)), cosines


# --- blinded human review --------------------------------------------------------------------------------


def build_review_packet(
    eval_rows: Sequence[Mapping[str, Any]], student_answers: Sequence[str], base_answers: Sequence[str],
    seed: int = 0,
) -> tuple[pa.Table, pa.Table]:
    """(REVIEW_PACKET, REVIEW_KEY): one blinded pair per eval row, student vs base student.

    A seeded RNG (random.Random(f"review-packet:{seed}")) decides for each row whether the student is A,
    draws an opaque packet_id ("pk-" + 12 hex digits, not derived from the eval_id) and shuffles the rows, so
    neither position, id nor order tells a reviewer which model wrote an answer. Same inputs, same packet.
    """
    if not (len(eval_rows) == len(student_answers) == len(base_answers)) or not eval_rows:
        raise ValueError("build_review_packet: need one student and one base answer per eval row, at least one")
    rng = random.Random(f"review-packet:{seed}")
    packet, key, used = [], [], set()
    for row, student, base in zip(eval_rows, student_answers, base_answers, strict=True):
        packet_id = f"pk-{rng.getrandbits(48):012x}"
        while packet_id in used:
            packet_id = f"pk-{rng.getrandbits(48):012x}"
        used.add(packet_id)
        student_first = rng.random() < 0.5
        a, b = (student, base) if student_first else (base, student)
        packet.append({"packet_id": packet_id, "prompt": row["prompt"], "answer_a": a, "answer_b": b})
        model_a, model_b = REVIEW_MODELS if student_first else REVIEW_MODELS[::-1]
        key.append({"packet_id": packet_id, "eval_id": row["eval_id"], "slice": row["slice"],
                    "model_a": model_a, "model_b": model_b})
    order = list(range(len(packet)))
    rng.shuffle(order)
    return (pa.Table.from_pylist([packet[i] for i in order], schema=REVIEW_PACKET),
            pa.Table.from_pylist([key[i] for i in order], schema=REVIEW_KEY))


@dataclass(frozen=True)
class HumanReviewResult:
    """Completed reviews scored against the unblinding key. win_rate is None until every packet has a valid
    review; `status` says why ("awaiting human review: ...") or "complete"."""

    win_rate: float | None
    status: str
    packets: int
    reviews: int = 0
    reviewed_packets: int = 0
    student_wins: int = 0
    base_wins: int = 0
    ties: int = 0
    win_rate_by_slice: dict[str, float] = field(default_factory=dict)
    quarantine: pa.Table = field(default_factory=lambda: quarantine_table([]))


def score_human_reviews(reviews_uri: str, key: pa.Table) -> HumanReviewResult:
    """Read completed reviews (COMPLETED_REVIEWS: packet_id, choice a/b/tie, optional reviewer) and unblind.

    Empty `reviews_uri`: awaiting review. Rows with an unknown packet_id, a choice outside REVIEW_CHOICES or a
    repeated (packet_id, reviewer) go to the quarantine with the reason; more than 20% bad rows raise
    DataContractError naming the file, column and first bad row. Packets without a valid review keep the
    metric missing. win_rate = (student wins + ties / 2) / valid reviews, overall and per slice.
    """
    packets = key.num_rows
    if not reviews_uri:
        return HumanReviewResult(None, "awaiting human review: no completed reviews were given", packets)
    raw = storage.read_table(reviews_uri)
    if "reviewer" not in raw.column_names:
        raw = raw.append_column("reviewer", pa.nulls(raw.num_rows, pa.string()))
    by_packet = {row["packet_id"]: row for row in key.to_pylist()}

    def choice_check(value: object) -> str | None:
        ok = str(value).strip().lower() in REVIEW_CHOICES
        return None if ok else f"bad choice {value!r}: expected one of {', '.join(REVIEW_CHOICES)}"

    def packet_check(value: object) -> str | None:
        return None if value in by_packet else "unknown packet_id: not in the review key"

    validated = validate_table(raw, COMPLETED_REVIEWS, reviews_uri,
                               extra_checks=[("packet_id", packet_check), ("choice", choice_check)])
    votes: Counter[str] = Counter()
    by_slice: dict[str, list[float]] = {}
    reviewed = set()
    for row in validated.table.to_pylist():
        entry = by_packet[row["packet_id"]]
        reviewed.add(row["packet_id"])
        choice = row["choice"].strip().lower()
        winner = "tie" if choice == "tie" else entry[f"model_{choice}"]
        votes[winner] += 1
        by_slice.setdefault(entry["slice"], []).append({"student": 1.0, "tie": 0.5}.get(winner, 0.0))
    reviews = sum(votes.values())
    missing = [packet_id for packet_id in by_packet if packet_id not in reviewed]
    counts = dict(packets=packets, reviews=reviews, reviewed_packets=len(reviewed), student_wins=votes["student"],
                  base_wins=votes["base_student"], ties=votes["tie"], quarantine=validated.quarantine)
    if missing:
        status = (f"awaiting human review: {len(missing)} of {packets} packets have no valid completed review "
                  f"(first {missing[0]}; {validated.quarantine.num_rows} review rows quarantined)")
        return HumanReviewResult(None, status, **counts)
    win_rate = (votes["student"] + 0.5 * votes["tie"]) / reviews
    per_slice = {name: float(np.mean(scores)) for name, scores in by_slice.items()}
    return HumanReviewResult(win_rate, "complete", win_rate_by_slice=per_slice, **counts)


# --- slices of the human-reviewed set --------------------------------------------------------------------

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
      stopwords).
    """
    action = detect_action(answer)
    kind = row["slice"]
    if kind == "escalation":
        return action == row["expected_action"]
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


# --- cost ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingHardware:
    """Machines and their hourly prices (resources/serving_hardware.yaml)."""

    version: str
    currency: str
    usd_per_hour: dict[str, float]
    source: str

    @classmethod
    def load(cls, uri: str | None = None) -> ServingHardware:
        if uri:
            text, source = storage.read_text(uri), uri
        else:
            text = resources.files("mangadistill.resources").joinpath("serving_hardware.yaml").read_text("utf-8")
            source = "mangadistill/resources/serving_hardware.yaml"
        document = yaml.safe_load(text)
        machines = document.get("machines") if isinstance(document, dict) else None
        if not isinstance(machines, dict) or not document.get("version"):
            raise ValueError(f"{source}: a hardware price table needs 'version' and a 'machines' mapping")
        prices = {}
        for name, entry in machines.items():
            price = entry.get("usd_per_hour") if isinstance(entry, dict) else None
            if isinstance(price, bool) or not isinstance(price, int | float) or not price > 0 or math.isinf(price):
                raise ValueError(f"{source}: machine {name!r} needs a positive, finite 'usd_per_hour'")
            prices[str(name)] = float(price)
        return cls(str(document["version"]), str(document.get("currency", "USD")), prices, source)

    def price(self, machine: str) -> float:
        if machine not in self.usd_per_hour:
            raise KeyError(f"{self.source} (version {self.version}) has no machine {machine!r}; "
                           f"known: {sorted(self.usd_per_hour)}")
        return self.usd_per_hour[machine]


def self_hosted_cost_per_1k(usd_per_hour: float, tokens_per_second: float, mean_response_tokens: float) -> float:
    """USD per 1K responses = usd_per_hour / (tokens_per_second × 3600 / mean_response_tokens) × 1000."""
    for name, value in (("usd_per_hour", usd_per_hour), ("tokens_per_second", tokens_per_second),
                        ("mean_response_tokens", mean_response_tokens)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"self_hosted_cost_per_1k: {name} must be a positive number, got {value!r}")
    responses_per_hour = tokens_per_second * 3600.0 / mean_response_tokens
    return usd_per_hour / responses_per_hour * 1000.0


def recorded_cost_per_1k(costs_usd: Sequence[float]) -> float:
    """Mean recorded cost per response × 1000 (NaN for no rows)."""
    return float(np.mean(costs_usd)) * 1000.0 if len(costs_usd) else float("nan")


def cost_reduction(student_per_1k: float | None, teacher_per_1k: float | None) -> float:
    """1 − student / teacher; NaN when either is unknown or the teacher's cost is not positive."""
    if student_per_1k is None or teacher_per_1k is None or not teacher_per_1k > 0 or math.isinf(teacher_per_1k):
        return float("nan")
    return 1.0 - student_per_1k / teacher_per_1k


def served_tokens_per_second(quantization_report_uri: str, served_model: str) -> float:
    """tokens_per_second of `served_model` ("baseline", "int8", "nf4") in a response_quantization report."""
    report = json.loads(storage.read_text(quantization_report_uri))
    models = report.get("models", {})
    if served_model not in models:
        raise KeyError(f"{quantization_report_uri}: no model {served_model!r}; found {sorted(models)}")
    return float(models[served_model]["tokens_per_second"])


# --- answers ---------------------------------------------------------------------------------------------


def answer_eval_prompts(
    backend: ChatBackend, eval_rows: Sequence[Mapping[str, Any]], system_prompt: str | None = None,
    max_tokens: int = 256,
) -> tuple[pa.Table, pa.Table]:
    """(MODEL_ANSWERS, QUARANTINE): `backend`'s answer to each eval prompt, asked the way the student was
    trained (`response_training.chat_messages`), greedy. A prompt left unanswered (an empty reply, or a request
    that failed after retries) gets an empty answer, which fails every check that needs one, and a quarantine
    row with the reason: the gate measures a model that does not answer instead of stopping on it."""
    from mangadistill.response.training import chat_messages

    answers, bad = [], []
    for index, row in enumerate(eval_rows):
        try:
            result = backend.complete(chat_messages(row["prompt"], system_prompt), temperature=0.0,
                                      max_tokens=max_tokens, label=f"answer {row['eval_id']}")
        except ChatCallFailed as failure:
            bad.append({"source": backend.model, "row": index, "message_id": row["eval_id"], "column": "prompt",
                        "reason": f"no answer: {failure.reason}", "value": row["prompt"][:200]})
            answers.append({"eval_id": row["eval_id"], "response": "",
                            "completion_tokens": failure.usage.get("completion_tokens", 0)})
            continue
        answers.append({"eval_id": row["eval_id"], "response": result.content,
                        "completion_tokens": result.completion_tokens})
    return pa.Table.from_pylist(answers, schema=MODEL_ANSWERS), quarantine_table(bad)


def _aligned(eval_ids: Sequence[str], uri: str, schema: pa.Schema, id_column: str) -> list[dict]:
    """Rows of the table at `uri` in eval order; every eval_id must have exactly one row."""
    table = validate_table(storage.read_table(uri), schema, uri, on_bad_rows="fail").table
    by_id = {row[id_column]: row for row in table.to_pylist()}
    missing = [eval_id for eval_id in eval_ids if eval_id not in by_id]
    if missing:
        raise DataContractError(uri, id_column, None,
                                f"{len(missing)} of {len(eval_ids)} eval prompts have no answer, first {missing[0]!r}")
    return [by_id[eval_id] for eval_id in eval_ids]


# --- diagnostics -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagnosticThresholds:
    """high_final_loss: mean token CE (nats) of the last 10% of training steps above which the student fits
    its data poorly; copied_share: share of the student's unsupported claims that repeat the teacher's."""

    high_final_loss: float = 1.0
    copied_share: float = 0.5


@dataclass(frozen=True)
class Diagnostic:
    failure: str
    detection: str
    detected: bool | None
    evidence: str
    figure: float | None
    fix: str

    def row(self) -> list[object]:
        verdict = {True: "yes", False: "no", None: "unknown"}[self.detected]
        return [self.failure, self.detection, verdict, self.evidence, self.figure, self.fix]


def final_train_loss(training_report: Mapping[str, Any]) -> float:
    """Mean of the last max(1, ceil(10%)) per-step token CE values (step_ce, else step_losses)."""
    values = list(training_report.get("step_ce") or training_report.get("step_losses") or [])
    if not values:
        return float("nan")
    tail = max(1, math.ceil(0.1 * len(values)))
    return float(np.mean(values[-tail:]))


def copied_findings(student_findings: Sequence[Sequence[Mapping]], teacher_findings: Sequence[Sequence[Mapping]]
                    ) -> tuple[int, int]:
    """(student findings that repeat a teacher finding on the same prompt, all student findings); a repeat has
    the same kind and title."""
    copied = total = 0
    for student, teacher in zip(student_findings, teacher_findings, strict=True):
        teacher_keys = {(f["kind"], f["title"]) for f in teacher}
        total += len(student)
        copied += sum((f["kind"], f["title"]) in teacher_keys for f in student)
    return copied, total


def _gate_result(decision: GateDecision, *metrics: str):
    return next((result for result in decision.results if result.metric in metrics), None)


def diagnose(metrics: Mapping[str, float | None], decision: GateDecision,
             thresholds: DiagnosticThresholds = DiagnosticThresholds()) -> list[Diagnostic]:
    """One Diagnostic per row of the seed's Failure Modes table, from the measured metrics."""

    def make(failure: str, detected: bool | None, evidence: str, figure: float | None) -> Diagnostic:
        detection, fix = SEED_FAILURE_MODES[failure]
        return Diagnostic(failure, detection, detected, evidence,
                          None if figure is None or not math.isfinite(figure) else figure, fix)

    def value(name: str) -> float:
        raw = metrics.get(name)
        return float("nan") if raw is None else float(raw)

    out = []
    share, copied, total = (value("student_findings_copied_share"), value("student_findings_copied"),
                            value("student_findings"))
    if total > 0:
        out.append(make("teacher hallucinations copied", share >= thresholds.copied_share,
                        f"{copied:.0f} of the student's {total:.0f} unsupported claims repeat the teacher's on the "
                        f"same prompt (share {share:.2f}, threshold {thresholds.copied_share:g}); teacher "
                        f"hallucination rate {value('teacher_hallucination_rate'):.3f}", share))
    else:
        out.append(make("teacher hallucinations copied", False if total == 0 else None,
                        "the student made no unsupported claim on the evaluation set" if total == 0
                        else "not measured", 0.0 if total == 0 else None))

    loss = value("final_train_loss")
    preference = _gate_result(decision, "teacher_preference_match", PROXY_METRIC)
    weak = None if preference is None or preference.value is None or math.isnan(preference.value) \
        else not preference.passed
    if math.isnan(loss):
        detected, evidence = None, "no training report given"
    else:
        high = loss >= thresholds.high_final_loss
        detected = False if not high else weak
        eval_text = ("preference not measured" if weak is None else
                     f"{preference.metric} {preference.value:.3f} ({'below' if weak else 'meets'} "
                     f"{preference.threshold:g})")
        evidence = (f"final training loss {loss:.3f} nats/token ({'>=' if high else '<'} "
                    f"{thresholds.high_final_loss:g}); {eval_text}")
    out.append(make("student too small", detected, evidence, loss))

    delta = value(f"slice_{RARE_SLICE}_vs_base")
    out.append(make("dark knowledge hurts rare classes", None if math.isnan(delta) else delta < 0,
                    f"{RARE_SLICE} slice (refusals and hand-offs): student {value(f'slice_{RARE_SLICE}_score'):.3f} "
                    f"vs base student {value(f'base_slice_{RARE_SLICE}_score'):.3f} ({delta:+.3f})", delta))

    reduction = value("cost_reduction")
    gate = _gate_result(decision, "cost_reduction")
    needed = gate.threshold if gate is not None else 0.5
    out.append(make("cost win too small", None if math.isnan(reduction) else reduction < needed,
                    f"student ${value('student_cost_per_1k_usd'):.4g} vs teacher "
                    f"${value('teacher_cost_per_1k_usd'):.4g} per 1K responses: reduction {reduction:.3f} "
                    f"(needs >= {needed:g})", reduction))
    return out


# --- the gate --------------------------------------------------------------------------------------------


@dataclass
class ResponseGateOutcome:
    metrics: dict[str, float | None]
    decision: GateDecision
    event: dict
    diagnostics: list[Diagnostic]
    judgments: pa.Table
    review: HumanReviewResult

    @property
    def promote(self) -> bool:
        return self.decision.promote


def explain_failures(decision: GateDecision, explanations: Mapping[str, str]) -> GateDecision:
    """The decision with `explanations[metric]` appended to the reason of each gate that failed on a missing
    or NaN value (e.g. human_win_rate: "awaiting human review ...")."""
    results = [
        replace(result, reason=f"{result.reason}: {explanations[result.metric]}")
        if not result.passed and result.metric in explanations
        and (result.value is None or not math.isfinite(result.value)) else result
        for result in decision.results
    ]
    return GateDecision(decision.promote, results)


def evaluate_response_student(
    eval_uri: str, student_answers_uri: str, base_answers_uri: str, teacher_answers_uri: str,
    judge: ChatBackend | None = None, judge_prompt_uri: str = "", proxy_model: str = "",
    student_tokens_per_second: float | None = None, student_hardware: str = "",
    teacher_tokens_per_second: float | None = None, teacher_hardware: str = "", hardware_uri: str = "",
    training_report_uri: str = "", catalog_uri: str = "", judge_guided_choice: bool = False,
) -> tuple[dict[str, float | None], dict[str, Any]]:
    """All metrics but the human win rate (module docstring), and details for the report and the packet."""
    validated = validate_table(storage.read_table(eval_uri), RESPONSE_EVAL, eval_uri, extra_checks=[
        ("slice", lambda v: None if v in RESPONSE_EVAL_SLICES else f"unknown slice; expected {RESPONSE_EVAL_SLICES}")])
    rows = validated.table.to_pylist()
    ids = [row["eval_id"] for row in rows]
    answers = {
        "student": _aligned(ids, student_answers_uri, MODEL_ANSWERS, "eval_id"),
        "base_student": _aligned(ids, base_answers_uri, MODEL_ANSWERS, "eval_id"),
        "teacher": _aligned(ids, teacher_answers_uri, TEACHER_RESPONSES, "prompt_id"),
    }
    texts = {name: [row["response"] for row in model_rows] for name, model_rows in answers.items()}
    metrics: dict[str, float | None] = {"eval_rows": float(len(rows)),
                                        "eval_quarantined_rows": float(validated.quarantine.num_rows)}
    explanations: dict[str, str] = {}

    catalog = factcheck.CatalogIndex(catalog_records(catalog_uri) if catalog_uri else catalog_records())
    facts, slices = {}, {}
    for name, model_texts in texts.items():
        table, summary = factcheck.check_responses(model_texts, catalog, ids)
        facts[name] = table.to_pylist()
        prefix = "" if name == "student" else f"{name.replace('_student', '')}_"
        metrics[f"{prefix}hallucination_rate"] = summary["hallucination_rate"]
        metrics[f"{prefix}unanswered_prompts"] = float(sum(not text.strip() for text in model_texts))
        passed = [slice_check(row, text, fact) for row, text, fact in zip(rows, model_texts, facts[name],
                                                                           strict=True)]
        slices[name] = slice_scores(rows, passed)
        for slice_name, score in slices[name].items():
            metrics[f"{prefix}slice_{slice_name}_score"] = score
    for slice_name in RESPONSE_EVAL_SLICES:
        metrics[f"slice_{slice_name}_vs_base"] = slices["student"][slice_name] - slices["base_student"][slice_name]
        metrics[f"slice_{slice_name}_rows"] = float(sum(row["slice"] == slice_name for row in rows))
    copied, total = copied_findings([f["findings"] for f in facts["student"]],
                                    [f["findings"] for f in facts["teacher"]])
    metrics.update(student_findings=float(total), student_findings_copied=float(copied),
                   student_findings_copied_share=copied / total if total else float("nan"))

    preference = None
    if judge is not None:
        preference = judge_preference(judge, ids, [row["prompt"] for row in rows], texts["teacher"],
                                      texts["student"], load_judge_prompt(judge_prompt_uri or None),
                                      guided_choice=judge_guided_choice)
        metrics.update(preference.metrics())
    else:
        metrics["teacher_preference_match"] = None
        if proxy_model:
            metrics[PROXY_METRIC], _ = similarity_proxy_match(texts["student"], texts["teacher"], proxy_model)
            explanations["teacher_preference_match"] = (
                f"no judge API was given; only the offline proxy {PROXY_METRIC} (embedding cosine >= "
                f"{PROXY_SIMILARITY_THRESHOLD:g}, {proxy_model}) was measured, and this gates file does not accept it")
        else:
            explanations["teacher_preference_match"] = "no judge API was given"

    hardware = ServingHardware.load(hardware_uri or None)
    student_tokens = [row["completion_tokens"] for row in answers["student"] if row["completion_tokens"]]
    metrics["student_mean_response_tokens"] = float(np.mean(student_tokens)) if student_tokens else None
    metrics["student_tokens_per_second"] = student_tokens_per_second
    metrics["student_usd_per_hour"] = hardware.price(student_hardware) if student_hardware else None
    if student_tokens and student_tokens_per_second and student_hardware:
        metrics["student_cost_per_1k_usd"] = self_hosted_cost_per_1k(
            metrics["student_usd_per_hour"], student_tokens_per_second, metrics["student_mean_response_tokens"])
    else:
        metrics["student_cost_per_1k_usd"] = None
        explanations["cost_reduction"] = ("student cost unknown: needs its measured tokens per second, its serving "
                                          "hardware and completion_tokens of its answers")
    teacher_tokens = [row["completion_tokens"] for row in answers["teacher"]]
    metrics["teacher_mean_response_tokens"] = float(np.mean(teacher_tokens))
    metrics["teacher_mean_recorded_cost_usd"] = float(np.mean([row["cost_usd"] for row in answers["teacher"]]))
    self_hosted_teacher = bool(teacher_tokens_per_second and teacher_hardware)
    metrics["teacher_tokens_per_second"] = teacher_tokens_per_second if self_hosted_teacher else None
    metrics["teacher_usd_per_hour"] = hardware.price(teacher_hardware) if self_hosted_teacher else None
    if self_hosted_teacher:
        metrics["teacher_cost_per_1k_usd"] = self_hosted_cost_per_1k(
            metrics["teacher_usd_per_hour"], teacher_tokens_per_second, metrics["teacher_mean_response_tokens"])
        teacher_basis = f"measured throughput on {teacher_hardware}"
    else:
        metrics["teacher_cost_per_1k_usd"] = recorded_cost_per_1k([row["cost_usd"] for row in answers["teacher"]])
        teacher_basis = "recorded usage cost"
        if not metrics["teacher_cost_per_1k_usd"] > 0:
            explanations.setdefault("cost_reduction", "the teacher's recorded usage cost is 0 (a self-hosted teacher "
                                                      "priced 0 per token): give its throughput and hardware")
    metrics["cost_reduction"] = cost_reduction(metrics["student_cost_per_1k_usd"], metrics["teacher_cost_per_1k_usd"])

    metrics["final_train_loss"] = (final_train_loss(json.loads(storage.read_text(training_report_uri)))
                                   if training_report_uri else None)
    details = {"rows": rows, "texts": texts, "slices": slices, "preference": preference,
               "judge_guided_choice": judge_guided_choice,
               "explanations": explanations, "teacher_cost_basis": teacher_basis,
               "hardware_version": hardware.version, "student_hardware": student_hardware}
    return metrics, details


def run_response_gate(
    eval_uri: str, student_answers_uri: str, base_answers_uri: str, teacher_answers_uri: str,
    report_uri: str, event_uri: str, review_packet_uri: str, review_key_uri: str,
    completed_reviews_uri: str = "", judgments_uri: str = "", gates_uri: str = "",
    judge: ChatBackend | None = None, judge_prompt_uri: str = "", proxy_model: str = "",
    student_tokens_per_second: float | None = None, student_hardware: str = "",
    teacher_tokens_per_second: float | None = None, teacher_hardware: str = "", hardware_uri: str = "",
    training_report_uri: str = "", catalog_uri: str = "", judge_guided_choice: bool = False, review_seed: int = 0,
    student_name: str = "response-student", teacher_name: str = "response-teacher",
    diagnostic_thresholds: DiagnosticThresholds = DiagnosticThresholds(),
) -> ResponseGateOutcome:
    """Measure, export the blinded review packet and its key, score completed reviews when given, apply the
    gates (packaged response gates when gates_uri is empty), write the report and the event.

    The event has exactly the seed's keys (event, student, teacher, human_win_rate, hallucination_rate,
    cost_reduction) plus thresholds, gates and promote (the decision); no timestamp.
    """
    gates = load_gates(gates_uri or packaged_gates_path("response"))
    metrics, details = evaluate_response_student(
        eval_uri, student_answers_uri, base_answers_uri, teacher_answers_uri, judge, judge_prompt_uri, proxy_model,
        student_tokens_per_second, student_hardware, teacher_tokens_per_second, teacher_hardware, hardware_uri,
        training_report_uri, catalog_uri, judge_guided_choice)
    packet, key = build_review_packet(details["rows"], details["texts"]["student"], details["texts"]["base_student"],
                                      review_seed)
    storage.write_table(packet, review_packet_uri)
    storage.write_table(key, review_key_uri)
    review = score_human_reviews(completed_reviews_uri, key)
    metrics.update(human_win_rate=review.win_rate, human_review_packets=float(review.packets),
                   human_reviews=float(review.reviews), human_reviews_quarantined=float(review.quarantine.num_rows))
    metrics.update({f"human_win_rate_{name}": rate for name, rate in review.win_rate_by_slice.items()})
    packet_note = f"blinded packet of {review.packets} pairs: {review_packet_uri}"
    explanations = {**details["explanations"], "human_win_rate": f"{review.status} ({packet_note})"}
    decision = explain_failures(evaluate_gates(gates, metrics), explanations)
    event = distilled_model_eval(student_name, teacher_name, {name: metrics[name] for name in SEED_EVENT_METRICS},
                                 decision, include_timestamp=False)
    write_event(event, event_uri)
    preference = details["preference"]
    judgments = pa.Table.from_pylist(preference.judgments if preference else [], schema=JUDGMENTS)
    if judgments_uri:
        storage.write_table(judgments, judgments_uri)
    diagnostics = diagnose(metrics, decision, diagnostic_thresholds)
    storage.write_text(report_uri, _report_html(metrics, details, decision, diagnostics, review, student_name,
                                                teacher_name, judge))
    return ResponseGateOutcome(metrics, decision, event, diagnostics, judgments, review)


def _report_html(metrics, details, decision, diagnostics, review, student_name, teacher_name, judge) -> str:
    preference: PreferenceResult | None = details["preference"]
    slices = details["slices"]
    sections: list[r.Section] = [
        r.KeyValueSection("Run", {
            "student": student_name, "teacher": teacher_name,
            "judge": (f"{judge.model} ({preference.prompt_version}"
                      f"{', guided choice' if details['judge_guided_choice'] else ''})" if preference
                      else "none (no judge API given)"),
            "evaluation rows (human-reviewed set)": metrics["eval_rows"],
            "evaluation rows quarantined": metrics["eval_quarantined_rows"],
            "eval prompts left unanswered: student / base student / teacher": " / ".join(
                f"{metrics[f'{prefix}unanswered_prompts']:g}" for prefix in ("", "base_", "teacher_")),
            "human review": review.status,
        }),
    ]
    if preference:
        outcome_names = ("student preferred", "tie", "teacher preferred", "failed")
        by_order = {"teacher first": preference.outcome_shares("teacher_first"),
                    "student first": preference.outcome_shares("student_first"),
                    "both orders": preference.outcome_shares()}
        sections += [
            r.TableSection("Teacher preference match (pairwise judge, both orders)",
                           ["judgments", "match rate", "failed", "unparseable", "position A chosen",
                            "order-consistent prompts"],
                           [[metrics["judge_judgments"], metrics["teacher_preference_match"],
                             metrics["judge_failed_judgments"], metrics["judge_unparseable_judgments"],
                             metrics["judge_position_a_share"], metrics["judge_order_consistency"]]]),
            r.FigureSection("Judge verdicts by order", r.grouped_bar_chart(
                list(by_order), {name: [shares[name] for shares in by_order.values()] for name in outcome_names},
                title="Pairwise judge: teacher vs student answer", ylabel="share of judgments")),
        ]
        consistency = metrics["judge_order_consistency"]
        if not consistency >= JUDGE_CONSISTENCY_WARNING:
            sections.append(r.ParagraphSection("The judge is not reliable here", (
                f"It gave the same verdict in both orders for {consistency:.0%} of the prompts and chose "
                f"position A in {metrics['judge_position_a_share']:.0%} of its judgments: it "
                "judges the position more than the answers, so the match rate says little about the student "
                "(a judge that always picks one position scores exactly 0.5). Use a stronger judge model.")))
    elif PROXY_METRIC in metrics:
        sections.append(r.ParagraphSection("Teacher preference match: offline PROXY only", (
            f"No judge API was given. {PROXY_METRIC} = {r.format_value(metrics[PROXY_METRIC])}: the share of "
            f"prompts whose student answer has embedding cosine >= {PROXY_SIMILARITY_THRESHOLD:g} to the teacher's. "
            "It is not a preference judgment and passes a gate only if the gates file names it.")))
    if review.win_rate is not None:
        names = sorted(review.win_rate_by_slice)
        sections.append(r.FigureSection("Human win rate vs base student, by slice", r.grouped_bar_chart(
            [*names, "all"], {"student": [*(review.win_rate_by_slice[n] for n in names), review.win_rate]},
            title="Blinded A/B reviews: (wins + ties/2) / reviews", ylabel="win rate")))
    else:
        sections.append(r.ParagraphSection("Human win rate vs base student", review.status))
    slice_rows = [[name, metrics[f"slice_{name}_rows"], slices["student"][name], slices["base_student"][name],
                   slices["teacher"][name], metrics[f"slice_{name}_vs_base"]] for name in RESPONSE_EVAL_SLICES]
    sections += [
        r.TableSection("Fixed human-reviewed set, slice by slice (share of rows passing the slice check)",
                       ["slice", "rows", "student", "base student", "teacher", "student - base"], slice_rows),
        r.FigureSection("Slice scores", r.grouped_bar_chart(
            list(RESPONSE_EVAL_SLICES), {name.replace("_", " "): [slices[name][s] for s in RESPONSE_EVAL_SLICES]
                                         for name in ("teacher", "student", "base_student")},
            title="Slice scores on the human-reviewed set", ylabel="share passing")),
        r.TableSection("Catalog hallucination rate (fact checker, evaluation answers)",
                       ["model", "hallucination rate"],
                       [["student", metrics["hallucination_rate"]],
                        ["base student", metrics["base_hallucination_rate"]],
                        ["teacher", metrics["teacher_hallucination_rate"]]]),
        r.TableSection("Cost per 1K responses", ["model", "basis", "USD / hour", "tokens / s",
                                                 "mean response tokens", "USD per 1K responses"], [
            ["student", f"measured throughput on {details['student_hardware'] or 'n/a'} "
                        f"({details['hardware_version']})", metrics["student_usd_per_hour"],
             metrics["student_tokens_per_second"], metrics["student_mean_response_tokens"],
             metrics["student_cost_per_1k_usd"]],
            ["teacher", details["teacher_cost_basis"], metrics["teacher_usd_per_hour"],
             metrics["teacher_tokens_per_second"], metrics["teacher_mean_response_tokens"],
             metrics["teacher_cost_per_1k_usd"]],
        ]),
        r.FigureSection("Cost comparison", r.grouped_bar_chart(
            ["USD per 1K responses"], {"teacher": [_number(metrics["teacher_cost_per_1k_usd"])],
                                       "student": [_number(metrics["student_cost_per_1k_usd"])]},
            title=f"cost reduction {r.format_value(metrics['cost_reduction'])}", ylabel="USD")),
        r.TableSection("Failure modes (the seed's table)",
                       ["failure", "detection", "detected", "evidence", "figure", "fix"],
                       [d.row() for d in diagnostics]),
    ]
    return r.render_html_report(f"Response distillation: {student_name}", decision, sections)


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)
