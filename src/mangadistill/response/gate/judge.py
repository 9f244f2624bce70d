"""Teacher preference match: a pairwise LLM judge through the OpenAI-compatible API, both orders of teacher and
student answer, strict JSON verdicts; and the offline embedding-similarity proxy used when there is no judge."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from string import Formatter
from typing import Any, Protocol

import numpy as np
import yaml

from mangadistill.core import storage
from mangadistill.core.chat_api import AnswerRejected, ChatAPIFatalError, ChatCallFailed, ChatResult
from mangadistill.response.cache import ResponseCache, cache_key

logger = logging.getLogger(__name__)

JUDGE_ORDERS = {"teacher_first": "B", "student_first": "A"}
"""Order name -> the position ("A" / "B") of the student's answer in it."""
JUDGE_WINNERS = ("A", "B", "tie")
JUDGE_CONSISTENCY_WARNING = 0.5
"""Below this share of order-consistent prompts the report warns that the judge judges positions."""
JUDGE_CHOICES = tuple(json.dumps({"winner": winner}) for winner in JUDGE_WINNERS)
"""The three judgments a constrained judge chooses from: {"winner": "A"}, {"winner": "B"}, {"winner": "tie"}."""
UNPARSEABLE = "unparseable judgment"
PROXY_METRIC = "teacher_preference_match_proxy"
PROXY_SIMILARITY_THRESHOLD = 0.8

_JUDGE_TAGS = ("question", "answer_a", "answer_b")
_JUDGE_TAG_LOOKALIKE = re.compile(r"<(\s*/?\s*(?:" + "|".join(_JUDGE_TAGS) + r")\b)", re.IGNORECASE)
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)

class ChatBackend(Protocol):
    """What the judge needs: `mangadistill.core.chat_api.ChatClient` fits (LocalChatModel too, without `validate`)."""

    model: str
    concurrency: int

    def complete(self, messages: Sequence[dict[str, str]], temperature: float = 0.0, max_tokens: int = 256,
                 **options: Any) -> ChatResult: ...


UNKEYED_OPTIONS = ("validate", "label")
"""Request options that do not change the answer asked for: left out of a cached verdict's key."""


class CachedJudge:
    """A judge whose verdicts are kept in a content-addressed `ResponseCache` (key: the judge's model, the
    messages as rendered, temperature, max_tokens and any constraint such as `choices`): the same question is
    never asked, or paid for, twice. Every run's calibration pairs, and a rerun of the gate on the same answers,
    cost no judge call. A cached verdict that `validate` refuses is asked again. `hits` and `misses` count."""

    def __init__(self, judge: ChatBackend, cache: ResponseCache) -> None:
        self.judge, self.cache = judge, cache
        self.model, self.concurrency = judge.model, judge.concurrency
        self.hits = self.misses = 0
        self._lock = threading.Lock()

    def complete(self, messages: Sequence[dict[str, str]], temperature: float = 0.0, max_tokens: int = 256,
                 **options: Any) -> ChatResult:
        keyed = {name: value for name, value in options.items() if name not in UNKEYED_OPTIONS}
        key = cache_key(self.model, "judge", messages, {"temperature": temperature, "max_tokens": max_tokens,
                                                        **keyed})
        entry = self.cache.get(key)
        if entry is not None and _still_valid(options.get("validate"), entry["content"]):
            with self._lock:
                self.hits += 1
            return ChatResult(entry["content"], entry.get("model") or self.model, entry["prompt_tokens"],
                              entry["completion_tokens"], 0.0, 0, 0.0, entry.get("finish_reason"))
        result = self.judge.complete(messages, temperature=temperature, max_tokens=max_tokens, **options)
        self.cache.put(key, {"content": result.content, "model": result.model, "prompt_tokens": result.prompt_tokens,
                             "completion_tokens": result.completion_tokens, "cost_usd": result.cost_usd,
                             "latency_s": result.latency_s, "finish_reason": result.finish_reason})
        with self._lock:
            self.misses += 1
        return result


def _still_valid(validate: Any, content: str) -> bool:
    """Whether a cached answer passes the request's `validate` (none: every answer does)."""
    if validate is None:
        return True
    try:
        validate(content)
    except AnswerRejected:
        return False
    return True


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
    text, source = storage.read_text_or_resource(uri, "judge_prompt.yaml")
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
    """All judgments (contracts.JUDGMENTS rows) and the figures derived from them (the package docstring)."""

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
    guided_choice: ask for exactly one of JUDGE_CHOICES (sent as the judge client's structured_api says:
    vLLM's `structured_outputs.choice`, or the older `guided_choice`) instead of free text.

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
                                    **({"choices": JUDGE_CHOICES} if guided_choice else {}))
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
