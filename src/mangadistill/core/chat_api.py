"""An OpenAI-compatible chat-completions client with a concurrency limit, retries and a price table.

`ChatClient.complete(messages)` POSTs to {base_url}/chat/completions and returns a `ChatResult` (the first
choice's content, the token usage of every attempt, the attempts, the latency and the cost). What happens to a
request:

- At most `concurrency` requests are in flight per client (a semaphore held only while the HTTP request runs,
  not while backing off), whichever threads send them.
- Connection errors, timeouts (`timeout_s` per attempt), HTTP 429 and 5xx, a body that is not a completion,
  empty content and content that the caller's `validate` refuses are retried up to `max_retries` times. The
  wait is the server's Retry-After when it sends one (seconds or an HTTP date, clamped to MAX_RETRY_AFTER_S),
  else backoff_base_s * 2**attempt capped at backoff_max_s, times a random factor in [0.5, 1] (jitter).
- 401, 403 and 404 mean the run is misconfigured (key, permission, URL or model): `ChatAPIFatalError`, at once.
  Any other 4xx is not retried. A request that still has no good answer raises `ChatCallFailed` with the
  reason and the usage already spent (failed answers are billed too).
- The API key is read from the environment variable `api_key_env` on every request (so a rotated Kubernetes
  secret is picked up) and is never logged or stored on the object.

Cost: `PriceTable` reads a versioned YAML of USD per 1M input and output tokens per model;
cost = prompt_tokens / 1e6 * input + completion_tokens / 1e6 * output.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib import resources
from typing import Any

import requests
import yaml

from mangadistill.core import storage

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 300.0
FATAL_STATUS = frozenset({401, 403, 404})
DEFAULT_API_KEY_ENV = "TEACHER_API_KEY"
Messages = Sequence[dict[str, str]]


class ChatAPIFatalError(RuntimeError):
    """The API refused the whole run (401, 403, 404): retrying cannot help; the message says what to fix."""


class ChatCallFailed(RuntimeError):
    """One request got no acceptable answer after every retry; `usage` holds the tokens it was billed."""

    def __init__(self, reason: str, attempts: int, usage: dict[str, int]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.usage = usage


class AnswerRejected(ValueError):
    """Raised by a `validate` callback (or the client) for an answer that should be asked for again."""


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds (fractions allowed) or an HTTP date.

    None when absent or unreadable; clamped to [0, MAX_RETRY_AFTER_S].
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M input (prompt) and output (completion) tokens."""

    input_per_1m: float
    output_per_1m: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens / 1e6 * self.input_per_1m + completion_tokens / 1e6 * self.output_per_1m


@dataclass(frozen=True)
class PriceTable:
    """Prices per model from a versioned YAML: `version`, `currency`, `models: {name: {input, output}}`."""

    version: str
    currency: str
    models: dict[str, ModelPrice]
    source: str = ""

    @classmethod
    def load(cls, uri: str | None = None) -> PriceTable:
        """The table at `uri` (local or gs://), default the packaged resources/prices.yaml."""
        if uri is None:
            text = resources.files("mangadistill.resources").joinpath("prices.yaml").read_text("utf-8")
            source = "mangadistill/resources/prices.yaml"
        else:
            text, source = storage.read_text(uri), str(uri)
        document = yaml.safe_load(text)
        models_entry = document.get("models") if isinstance(document, dict) else None
        if not isinstance(models_entry, dict) or not document.get("version"):
            raise ValueError(f"{source}: a price table needs 'version' and a 'models' mapping")
        models: dict[str, ModelPrice] = {}
        for name, entry in models_entry.items():
            try:
                price = ModelPrice(float(entry["input"]), float(entry["output"]))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{source}: model {name!r} needs numeric 'input' and 'output' prices") from None
            if not (price.input_per_1m >= 0 and price.output_per_1m >= 0):  # also refuses NaN
                raise ValueError(f"{source}: model {name!r} has a negative or NaN price")
            models[str(name)] = price
        return cls(str(document["version"]), str(document.get("currency", "USD")), models, source)

    def price(self, model: str) -> ModelPrice:
        """The price of `model`; KeyError naming the table and the models it knows when absent."""
        if model not in self.models:
            raise KeyError(f"{self.source or 'price table'} (version {self.version}) has no price for model "
                           f"{model!r}; known: {sorted(self.models)}")
        return self.models[model]

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        return self.price(model).cost(prompt_tokens, completion_tokens)


@dataclass(frozen=True)
class ChatResult:
    """One answered request. Usage sums every attempt of the request; cost is priced from that usage."""

    content: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    attempts: int
    latency_s: float
    finish_reason: str | None = None


@dataclass
class ChatUsage:
    """Counters summed over a client's life (thread-safe through the client's lock)."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    by_status: dict[str, int] = field(default_factory=dict)


class ChatClient:
    """POST {base_url}/chat/completions with retries; see the module docstring for the contract."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        concurrency: int = 4,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        prices: PriceTable | None = None,
    ) -> None:
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0 and timeout_s > 0")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.price = prices.price(model) if prices is not None else ModelPrice(0.0, 0.0)
        self.usage = ChatUsage()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        """One keep-alive session per thread (requests.Session is not thread-safe)."""
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _headers(self) -> dict[str, str]:
        api_key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def backoff_s(self, attempt: int) -> float:
        """min(backoff_max_s, backoff_base_s * 2**attempt) * U(0.5, 1)."""
        return min(self.backoff_max_s, self.backoff_base_s * 2**attempt) * random.uniform(0.5, 1.0)

    def _count(self, status: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        with self._lock:
            self.usage.requests += 1
            self.usage.by_status[status] = self.usage.by_status.get(status, 0) + 1
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
            self.usage.cost_usd += self.price.cost(prompt_tokens, completion_tokens)

    def complete(
        self,
        messages: Messages,
        temperature: float = 0.0,
        max_tokens: int = 256,
        validate: Callable[[str], Any] | None = None,
        label: str = "request",
        guided_choice: Sequence[str] | None = None,
    ) -> ChatResult:
        """The first choice's content for `messages`, retried as the module docstring says.

        `validate(content)` may raise AnswerRejected (or ValueError) to have the answer asked for again.
        `label` names the request in log lines (never the key, never the messages). `guided_choice` sends
        vLLM's extension of the same name (the answer is one of these texts; `mangadistill serve-teacher`
        honours it too); a server without it may refuse the request.
        """
        payload = {"model": self.model, "messages": list(messages), "temperature": temperature,
                   "max_tokens": max_tokens}
        if guided_choice:
            payload["guided_choice"] = list(guided_choice)
        spent = {"prompt_tokens": 0, "completion_tokens": 0}
        started = time.monotonic()
        problem = ""
        for attempt in range(self.max_retries + 1):
            delay: float | None = None
            try:
                with self._slots:
                    response = self._session().post(
                        self.url, json=payload, headers=self._headers(), timeout=self.timeout_s
                    )
            except (requests.ConnectionError, requests.Timeout) as error:
                problem = f"{type(error).__name__}: {error}"
                self._count(type(error).__name__)
            else:
                status = response.status_code
                if status in FATAL_STATUS:
                    self._count(str(status))
                    raise ChatAPIFatalError(
                        f"{self.url} answered HTTP {status} for model {self.model!r}: {response.text[:200]!r} "
                        f"(check the key in ${self.api_key_env}, the base URL and the model name)"
                    )
                if status == 429 or status >= 500:
                    self._count(str(status))
                    problem = f"HTTP {status}"
                    delay = retry_after_seconds(response.headers.get("Retry-After"))
                elif status >= 400:
                    self._count(str(status))
                    problem = f"HTTP {status} (not retried): {response.text[:200]!r}"
                    break
                else:
                    try:
                        content, finish_reason = self._read_answer(response, spent)
                        if not content.strip():
                            raise AnswerRejected("empty answer content")
                        if validate is not None:
                            validate(content)
                    except ValueError as error:  # AnswerRejected is a ValueError
                        problem = str(error)
                    else:
                        return ChatResult(
                            content=content,
                            model=self.model,
                            prompt_tokens=spent["prompt_tokens"],
                            completion_tokens=spent["completion_tokens"],
                            cost_usd=self.price.cost(spent["prompt_tokens"], spent["completion_tokens"]),
                            attempts=attempt + 1,
                            latency_s=time.monotonic() - started,
                            finish_reason=finish_reason,
                        )
            if attempt == self.max_retries:
                break
            delay = self.backoff_s(attempt) if delay is None else delay
            with self._lock:
                self.usage.retries += 1
            logger.warning("%s attempt %d: %s; retrying in %.2f s", label, attempt + 1, problem, delay)
            time.sleep(delay)
        with self._lock:
            self.usage.failures += 1
        logger.warning("%s failed after %d attempt(s): %s", label, attempt + 1, problem)
        raise ChatCallFailed(problem, attempt + 1, dict(spent))

    def _read_answer(self, response: requests.Response, spent: dict[str, int]) -> tuple[str, str | None]:
        """(content, finish_reason) of choices[0]; adds the body's usage to `spent` and the client's counters."""
        try:
            body = response.json()
        except ValueError:
            self._count("200")
            raise AnswerRejected(f"response body is not JSON: {response.text[:200]!r}") from None
        usage = body.get("usage") if isinstance(body, dict) else None
        prompt_tokens = completion_tokens = 0
        if isinstance(usage, dict):
            prompt_tokens = _token_count(usage.get("prompt_tokens"))
            completion_tokens = _token_count(usage.get("completion_tokens"))
        spent["prompt_tokens"] += prompt_tokens
        spent["completion_tokens"] += completion_tokens
        self._count("200", prompt_tokens, completion_tokens)
        try:
            choice = body["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise AnswerRejected(f"response has no choices[0].message.content: {str(body)[:200]!r}") from None
        if not isinstance(content, str):
            raise AnswerRejected(f"answer content is not text: {content!r}")
        return content, choice.get("finish_reason")


def _token_count(value: Any) -> int:
    try:
        count = int(value or 0)
    except (TypeError, ValueError):
        return 0
    return max(count, 0)
