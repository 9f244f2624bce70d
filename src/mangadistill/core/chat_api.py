"""An OpenAI-compatible chat-completions client: redaction, a concurrency limit, retries, deadlines, prices.

`ChatClient.complete(messages)` POSTs to {base_url}/chat/completions and returns a `ChatResult` (the first
choice's content, the token usage of every attempt, the attempts, the latency and the cost). It is the one path
by which text leaves the cluster for a model (teacher, adjudicator, judge), so it is where personal data stops:

- Every message's content is redacted with `redaction.redact_text` before anything is sent (idempotent on
  already-redacted text); `redactions` counts the replaced spans per kind over the client's life. When a
  second pass of the redactor still finds personal data, the request is refused with `PersonalDataRefused`
  (a ChatCallFailed) and nothing is sent. The refusal names the kinds, never the text.
- At most `concurrency` requests are in flight per client (a semaphore held only while the HTTP request runs,
  not while backing off), whichever threads send them.
- Transient failures are retried up to `max_retries` times: connection errors, timeouts, a truncated or
  undecodable body (ChunkedEncodingError, ContentDecodingError), HTTP 408, 429 and 5xx, a body that is not a
  completion, empty content and content that the caller's `validate` refuses. The wait is the server's
  Retry-After when it sends one (seconds or an HTTP date), else backoff_base_s * 2**attempt capped at
  backoff_max_s, times a random factor in [0.5, 1] (jitter).
- Each request has a total deadline, `deadline_s` from its start, that covers every attempt, every wait and
  the wait for a concurrency slot; a server that drips its answer is cut off at the deadline (its socket is
  shut down), not per read. A wait (Retry-After or backoff) that would end past the deadline fails the request
  at once, with the reason. `budget_s` optionally bounds the client's whole run, from its first request: past
  it, requests raise `ChatBudgetExhausted` (a ChatAPIFatalError: the stage stops, its cache keeps what it got).
- 401, 403 and 404 mean the run is misconfigured (key, permission, URL or model): `ChatAPIFatalError`, at once.
  Any other 4xx is not retried. A request that still has no good answer raises `ChatCallFailed` with the
  reason and the usage already spent (failed answers are billed too).
- Constrained answers: `complete(choices=[...])` (the answer is exactly one of these texts) and
  `complete(json_schema=...)` (the answer is JSON that fits the schema) are sent as the client's
  `structured_api` says: "structured_outputs" (default; vLLM >= 0.12, which removed the guided_* fields):
  `{"structured_outputs": {"choice": [...]}}` and OpenAI's standard `{"response_format": {"type": "json_schema",
  ...}}`; "guided" (vLLM < 0.12 and other servers that only know the old extension): `{"guided_choice": [...]}`
  and `{"guided_json": schema}`. `mangadistill serve-teacher` honours both choice forms.
- The API key is read from the environment variable `api_key_env` on every request (so a rotated Kubernetes
  secret is picked up) and is never logged or stored on the object.

Cost: `PriceTable` reads a versioned YAML of USD per 1M input and output tokens per model;
cost = prompt_tokens / 1e6 * input + completion_tokens / 1e6 * output.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3.poolmanager
import yaml
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from mangadistill.core import storage
from mangadistill.core.redaction import PII_KINDS, redact_text
from mangadistill.core.redaction import analyzer as redaction_analyzer

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 300.0
STRUCTURED_APIS = ("structured_outputs", "guided")
"""How a ChatClient sends a constrained answer (module docstring): vLLM's current fields, or its old guided_*."""
FATAL_STATUS = frozenset({401, 403, 404})
RETRIED_4XX = frozenset({408, 429})
"""The only 4xx retried (with every 5xx); any other 4xx fails the request at once."""
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
"""Transport errors that are retried: refused or dropped connections, timeouts, a truncated or undecodable body."""
DEFAULT_API_KEY_ENV = "TEACHER_API_KEY"
Messages = Sequence[dict[str, Any]]


class ChatAPIFatalError(RuntimeError):
    """The run cannot go on (HTTP 401, 403, 404, or its time budget is spent); the message says what to fix."""


class ChatCallFailed(RuntimeError):
    """One request got no acceptable answer after every retry; `usage` holds the tokens it was billed."""

    def __init__(self, reason: str, attempts: int, usage: dict[str, int]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.usage = usage


class ChatBudgetExhausted(ChatAPIFatalError):
    """The client's `budget_s` is spent; `usage` holds the tokens the interrupted request was billed."""

    def __init__(self, reason: str, usage: dict[str, int] | None = None) -> None:
        super().__init__(reason)
        self.usage = dict(usage or {"prompt_tokens": 0, "completion_tokens": 0})


class PersonalDataRefused(ChatCallFailed):
    """Personal data was still found after redaction: nothing was sent (attempts 0); `kinds` names what."""

    def __init__(self, label: str, kinds: Sequence[str]) -> None:
        super().__init__(f"refused to send {label}: after redaction the text still contains {', '.join(kinds)} "
                         "(nothing was sent)", 0, {"prompt_tokens": 0, "completion_tokens": 0})
        self.kinds = list(kinds)


class AnswerRejected(ValueError):
    """Raised by a `validate` callback (or the client) for an answer that should be asked for again."""


def retry_after_seconds(value: str | None, cap: float | None = MAX_RETRY_AFTER_S) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds (fractions allowed) or an HTTP date.

    None when absent or unreadable; at least 0 and at most `cap` (None: no upper clamp).
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
    seconds = max(seconds, 0.0)
    return seconds if cap is None else min(seconds, cap)


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
        text, source = storage.read_text_or_resource(uri, "prices.yaml")
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
    refused: int = 0
    """Requests refused before sending: personal data left after redaction."""


# --- a per-request deadline that also cuts off a server dripping its answer --------------------------------

_WATCH = threading.local()


class _Watchdog:
    """While entered on a thread, the connections that thread sends on are shut down `seconds` from now."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        _WATCH.current = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _WATCH.current = None
        with self._lock:
            self._connections.clear()

    def attach(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)
            if self.fired:
                _shut(connection)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for connection in self._connections:
                _shut(connection)


def _shut(connection: HTTPConnection) -> None:
    """Unblock a recv in progress on `connection` (the reading thread sees EOF or an error)."""
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _WatchedMixin:
    def request(self, *args: Any, **kwargs: Any) -> None:
        watchdog = getattr(_WATCH, "current", None)
        if watchdog is not None:
            watchdog.attach(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedMixin, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_PLAIN_POOLS = dict(urllib3.poolmanager.pool_classes_by_scheme)
_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections a `_Watchdog` can cut (plain and HTTP(S)-proxied; not SOCKS)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme == _PLAIN_POOLS:
            manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager


class _DeadlinePassed(Exception):
    """The request's deadline passed: during an attempt (`sent`, the watchdog cut it) or before one was sent."""

    def __init__(self, reason: str, sent: bool) -> None:
        super().__init__(reason)
        self.sent = sent


class ChatClient:
    """POST {base_url}/chat/completions, redacted, with retries and deadlines; see the module docstring.

    deadline_s: the total time one `complete` call may take (all attempts and waits); default
    timeout_s * (max_retries + 1) + backoff_max_s * max_retries. budget_s: the time the client may spend from
    its first request on (None: unbounded). structured_api: how constrained answers are sent (STRUCTURED_APIS;
    the module docstring). `redactions` counts redacted spans per kind (every PII kind listed).
    """

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
        deadline_s: float | None = None,
        budget_s: float | None = None,
        structured_api: str = "structured_outputs",
    ) -> None:
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0 and timeout_s > 0")
        if structured_api not in STRUCTURED_APIS:
            raise ValueError(f"structured_api must be one of {STRUCTURED_APIS}, got {structured_api!r}")
        if deadline_s is None:
            deadline_s = timeout_s * (max_retries + 1) + backoff_max_s * max_retries
        if not deadline_s > 0 or (budget_s is not None and not budget_s > 0):
            raise ValueError("need deadline_s > 0 and budget_s > 0 (or None)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.structured_api = structured_api
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.deadline_s = float(deadline_s)
        self.budget_s = None if budget_s is None else float(budget_s)
        self.price = prices.price(model) if prices is not None else ModelPrice(0.0, 0.0)
        self.usage = ChatUsage()
        self.redactions: Counter[str] = Counter(dict.fromkeys(PII_KINDS, 0))
        self._budget_ends: float | None = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)
        self._local = threading.local()
        redaction_analyzer()  # loaded here (seconds, once per process), not inside a request's deadline

    def _session(self) -> requests.Session:
        """One keep-alive session per thread (requests.Session is not thread-safe)."""
        if not hasattr(self._local, "session"):
            session = requests.Session()
            session.mount("http://", _DeadlineAdapter())
            session.mount("https://", _DeadlineAdapter())
            self._local.session = session
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

    def redact(self, messages: Messages, label: str = "request") -> list[dict[str, Any]]:
        """Copies of `messages` with every text content redacted (str content, or the "text" of content parts),
        counted in `redactions`. PersonalDataRefused when a second pass still finds personal data; ValueError
        for content that is neither text, None nor a list of parts."""
        found: Counter[str] = Counter()
        left: set[str] = set()

        def clean(text: str) -> str:
            redaction = redact_text(text)
            found.update(redaction.counts)
            left.update(redact_text(redaction.text).kinds)
            return redaction.text

        redacted = []
        for message in messages:
            copy = dict(message)
            content = copy.get("content")
            if isinstance(content, str):
                copy["content"] = clean(content)
            elif isinstance(content, list):
                parts = []
                for part in content:
                    if not isinstance(part, dict):
                        raise ValueError(f"{label}: a content part must be an object, got {type(part).__name__}")
                    parts.append({**part, "text": clean(part["text"])} if isinstance(part.get("text"), str)
                                 else dict(part))
                copy["content"] = parts
            elif content is not None:
                raise ValueError(f"{label}: message content must be text or a list of parts, "
                                 f"got {type(content).__name__}")
            redacted.append(copy)
        with self._lock:
            self.redactions.update(found)
            if left:
                self.usage.refused += 1
        if left:
            kinds = [kind for kind in PII_KINDS if kind in left]
            logger.warning("%s refused: personal data (%s) left after redaction; nothing sent", label, kinds)
            raise PersonalDataRefused(label, kinds)
        return redacted

    def _deadline(self, started: float) -> tuple[float, bool]:
        """(monotonic deadline of a request started at `started`, whether the run's budget is what sets it)."""
        deadline = started + self.deadline_s
        if self.budget_s is None:
            return deadline, False
        with self._lock:
            if self._budget_ends is None:
                self._budget_ends = started + self.budget_s
            budget_ends = self._budget_ends
        if started >= budget_ends:
            raise ChatBudgetExhausted(f"{self.url}: the client's time budget of {self.budget_s:g} s is spent "
                                      f"(model {self.model!r}); nothing more is sent")
        return min(deadline, budget_ends), budget_ends < deadline

    def _post(self, payload: dict[str, Any], deadline: float) -> requests.Response:
        """One attempt, cut off at `deadline` (waiting for a slot included); _DeadlinePassed when it is."""
        if not self._slots.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise _DeadlinePassed("no concurrency slot came free", sent=False)
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _DeadlinePassed("no time left for another attempt", sent=False)
            timeout = min(self.timeout_s, left)
            with _Watchdog(left) as watchdog:
                try:
                    response = self._session().post(self.url, json=payload, headers=self._headers(),
                                                     timeout=(timeout, timeout))
                except TRANSIENT_ERRORS as error:
                    if watchdog.fired:
                        reason = f"the server was still answering ({type(error).__name__})"
                        raise _DeadlinePassed(reason, sent=True) from None
                    raise
            if watchdog.fired:  # a cut inside the headers can read as a complete, empty response
                response.close()
                raise _DeadlinePassed("the server was still answering", sent=True)
            return response
        finally:
            self._slots.release()

    def complete(
        self,
        messages: Messages,
        temperature: float = 0.0,
        max_tokens: int = 256,
        validate: Callable[[str], Any] | None = None,
        label: str = "request",
        choices: Sequence[str] | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> ChatResult:
        """The first choice's content for the redacted `messages`, retried as the module docstring says.

        `validate(content)` may raise AnswerRejected (or ValueError) to have the answer asked for again.
        `label` names the request in log lines (never the key, never the messages). `choices`: the answer must
        be one of these texts; `json_schema`: it must be JSON fitting this schema; both are sent as
        `structured_api` says (`structured_fields`), and a server without that extension may refuse the
        request. Raises PersonalDataRefused (nothing sent), ChatCallFailed, ChatAPIFatalError or
        ChatBudgetExhausted.
        """
        started = time.monotonic()
        deadline, budget_bound = self._deadline(started)
        payload: dict[str, Any] = {"model": self.model, "messages": self.redact(messages, label),
                                   "temperature": temperature, "max_tokens": max_tokens,
                                   **structured_fields(self.structured_api, choices, json_schema)}
        spent = {"prompt_tokens": 0, "completion_tokens": 0}
        problem = "no attempt was made"
        attempts = 0
        out_of_time = False
        while True:
            delay: float | None = None
            try:
                response = self._post(payload, deadline)
            except _DeadlinePassed as cut:
                if cut.sent:
                    self._count("deadline")
                    attempts += 1
                problem = f"deadline of {deadline - started:.1f} s passed: {cut}"
                out_of_time = True
                break
            except TRANSIENT_ERRORS as error:
                attempts += 1
                problem = f"{type(error).__name__}: {error}"
                self._count(type(error).__name__)
            else:
                attempts += 1
                status = response.status_code
                if status in FATAL_STATUS:
                    self._count(str(status))
                    raise ChatAPIFatalError(
                        f"{self.url} answered HTTP {status} for model {self.model!r}: {response.text[:200]!r} "
                        f"(check the key in ${self.api_key_env}, the base URL and the model name)"
                    )
                if status in RETRIED_4XX or status >= 500:
                    self._count(str(status))
                    problem = f"HTTP {status}"
                    delay = retry_after_seconds(response.headers.get("Retry-After"), cap=None)
                    if delay is not None:
                        problem += f" with Retry-After {delay:g} s"
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
                            attempts=attempts,
                            latency_s=time.monotonic() - started,
                            finish_reason=finish_reason,
                        )
            if attempts > self.max_retries:
                break
            delay = self.backoff_s(attempts - 1) if delay is None else delay
            left = deadline - time.monotonic()
            if delay >= left:
                problem += f"; not retrying: the wait of {delay:g} s ends past the deadline ({left:.1f} s left)"
                out_of_time = True
                break
            with self._lock:
                self.usage.retries += 1
            logger.warning("%s attempt %d: %s; retrying in %.2f s", label, attempts, problem, delay)
            time.sleep(delay)
        with self._lock:
            self.usage.failures += 1
        logger.warning("%s failed after %d attempt(s): %s", label, attempts, problem)
        if out_of_time and budget_bound:
            raise ChatBudgetExhausted(f"{self.url}: the client's time budget of {self.budget_s:g} s ran out during "
                                      f"{label}: {problem}", spent)
        raise ChatCallFailed(problem, attempts, dict(spent))

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


def structured_fields(structured_api: str, choices: Sequence[str] | None = None,
                      json_schema: dict[str, Any] | None = None, schema_name: str = "answer") -> dict[str, Any]:
    """The request-body fields that constrain the answer to one of `choices` or to `json_schema` ({} when
    neither), in the form `structured_api` names (STRUCTURED_APIS; the module docstring)."""
    if choices is not None and json_schema is not None:
        raise ValueError("ask for choices or a JSON schema, not both")
    if structured_api not in STRUCTURED_APIS:
        raise ValueError(f"structured_api must be one of {STRUCTURED_APIS}, got {structured_api!r}")
    if choices:
        return ({"structured_outputs": {"choice": list(choices)}} if structured_api == "structured_outputs"
                else {"guided_choice": list(choices)})
    if json_schema:
        return ({"response_format": {"type": "json_schema",
                                     "json_schema": {"name": schema_name, "schema": json_schema, "strict": True}}}
                if structured_api == "structured_outputs" else {"guided_json": json_schema})
    return {}


def _token_count(value: Any) -> int:
    try:
        count = int(value or 0)
    except (TypeError, ValueError):
        return 0
    return max(count, 0)
