"""`mangadistill serve-teacher`: a local instruct model behind an OpenAI-compatible HTTP API.

The local demo and the tests label through the same HTTP path (`mangadistill.core.chat_api.ChatClient`) as
production does against a managed LLM. Endpoints:

- POST /v1/chat/completions: {"model", "messages": [{"role", "content"}], "max_tokens", "temperature"} ->
  {"id", "object": "chat.completion", "created", "model", "choices": [{"index": 0, "message": {"role":
  "assistant", "content"}, "finish_reason": "stop" | "length"}], "usage": {"prompt_tokens",
  "completion_tokens", "total_tokens"}}. The prompt is the tokenizer's chat template over the messages with
  the generation prompt; temperature 0 decodes greedily, above 0 samples. max_tokens is capped at the
  server's `max_new_tokens`. With vLLM's choice constraint, current (`"structured_outputs": {"choice": [text,
  ...]}`, vLLM >= 0.12) or old (`"guided_choice": [text, ...]`), the answer is exactly one of the given texts:
  the one with the highest log-likelihood after the prompt (`LocalChatModel.choose`). Other structured_outputs
  constraints (json, regex, grammar) are refused with 400, never ignored.
- GET /v1/models: {"object": "list", "data": [{"id", "object": "model", "owned_by"}]}.
- GET /healthz: {"status": "ok", "model"}.

Errors follow OpenAI's shape {"error": {"message", "type"}}: 400 for a bad body or Content-Length (missing,
repeated, not a non-negative integer, over MAX_BODY_BYTES, or a body shorter than it: answered when the socket
timeout passes), 400 for a prompt that does not fit the model's context with the answer's tokens
(PromptTooLong), 404 for another model name or path, 401 for a missing or wrong bearer token, 500 when the
model raises, 503 (Retry-After: 1) when every worker is busy for `queue_timeout_s`.

Fails closed: with `api_key_env` the variable must be set and non-empty when the server starts
(ServerKeyMissing otherwise) and on every request (else every request is refused); keys are compared in
constant time (hmac.compare_digest). Each connection's socket has a timeout (`socket_timeout_s`), at most
`max_workers` connections are served at once, and one generation runs at a time (a lock).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from mangadistill.core.chat_api import ChatCallFailed, ChatResult
from mangadistill.core.models import resolve_model

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_MAX_NEW_TOKENS = 512
MAX_BODY_BYTES = 1 << 20
MAX_GUIDED_CHOICES = 16
"""Each choice is one row of the batch that continues from the prompt's KV cache."""
DEFAULT_BATCH_SIZE = 8
"""Prompts greedy-decoded together by `LocalChatModel.complete_many`: on a CPU a batch of 8 costs little more
per step than one prompt, since decoding a small model is bound by reading its weights."""
DEFAULT_SOCKET_TIMEOUT_S = 30.0
DEFAULT_MAX_WORKERS = 8
DEFAULT_QUEUE_TIMEOUT_S = 5.0
_DIGITS = re.compile(r"[0-9]{1,12}")


class ServerKeyMissing(ValueError):
    """`api_key_env` names a variable that is unset or empty: the server refuses to start."""


class PromptTooLong(ValueError):
    """The chat-template prompt plus the answer's tokens exceed the model's context."""


def require_api_key(api_key_env: str | None) -> None:
    """ServerKeyMissing unless `api_key_env` is None or names a set, non-empty environment variable."""
    if api_key_env is not None and not os.environ.get(api_key_env):
        raise ServerKeyMissing(
            f"--api-key-env {api_key_env!r}: the variable is unset or empty, so every request would be let in; "
            "set it to the key clients must send, or leave out --api-key-env to serve without a key")


@dataclass(frozen=True)
class Generation:
    content: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class LocalChatModel:
    """A causal LM with a chat template, on the CPU (or `device`), answering one request at a time.

    Also a labelling backend: `complete(messages, temperature, max_tokens)` returns a `ChatResult` priced at
    0 (the price table's entry for a local model is 0; its serving cost is measured from throughput).
    """

    concurrency = 1

    def __init__(self, model: str = DEFAULT_MODEL, name: str | None = None, device: str = "cpu",
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = resolve_model(model)
        self.model = name or Path(model.removeprefix("builtin:").rstrip("/")).name
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        if not self.tokenizer.chat_template:
            raise ValueError(f"{model} ({folder}): the tokenizer has no chat_template; an instruct model is needed")
        self.lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
        eos = self.tokenizer.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        config = self.lm.config
        context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        self.context_tokens: int | None = int(context) if context else None
        """Prompt plus answer tokens the model can take (its position embeddings); None when unknown."""
        self._lock = threading.Lock()

    def _check_fits(self, prompt_tokens: int, new_tokens: int) -> None:
        """PromptTooLong when prompt_tokens + new_tokens exceed `context_tokens`."""
        if self.context_tokens is not None and prompt_tokens + new_tokens > self.context_tokens:
            raise PromptTooLong(
                f"the prompt is {prompt_tokens} tokens; with {new_tokens} answer tokens that exceeds the model's "
                f"context of {self.context_tokens} tokens (at most {self.context_tokens - new_tokens} prompt "
                "tokens)")

    def _prompt_ids(self, messages: Sequence[dict[str, str]]):
        """The chat template over `messages` with the generation prompt, as a (1, n) tensor on the device."""
        return self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"].to(self.device)

    def generate(self, messages: Sequence[dict[str, str]], max_tokens: int, temperature: float) -> Generation:
        """The assistant's reply to `messages`: at most min(max_tokens, max_new_tokens) new tokens;
        PromptTooLong when the prompt and that many tokens do not fit the context."""
        import torch

        prompt_ids = self._prompt_ids(messages)
        limit = max(1, min(max_tokens, self.max_new_tokens))
        self._check_fits(int(prompt_ids.shape[1]), limit)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with self._lock, torch.no_grad():
            output = self.lm.generate(
                input_ids=prompt_ids,
                attention_mask=torch.ones_like(prompt_ids),
                max_new_tokens=limit,
                pad_token_id=self.pad_token_id,
                top_p=None,
                top_k=None,
                **sampling,
            )
        return self._generation(output[0, prompt_ids.shape[1]:].tolist(), int(prompt_ids.shape[1]), limit)

    def _generation(self, new_ids: list[int], prompt_tokens: int, limit: int) -> Generation:
        """The Generation for decoded `new_ids`, cut after the first end-of-sequence token (a batch pads on)."""
        eos = self.tokenizer.eos_token_id
        if eos in new_ids:
            new_ids = new_ids[:new_ids.index(eos) + 1]
        stopped = bool(new_ids) and new_ids[-1] == eos
        content = self.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
        finish_reason = "stop" if stopped or len(new_ids) < limit else "length"
        return Generation(content, prompt_tokens, len(new_ids), finish_reason)

    def generate_greedy_batch(self, conversations: Sequence[Sequence[dict[str, str]]], max_tokens: int,
                              batch_size: int = DEFAULT_BATCH_SIZE) -> list[Generation | PromptTooLong]:
        """Greedy replies to every conversation, `batch_size` at a time (similar lengths together, left-padded),
        in the order given; a conversation that does not fit the context gets its PromptTooLong instead.
        Each reply is what `generate(..., temperature=0)` returns, up to the float noise padding brings."""
        import torch

        limit = max(1, min(max_tokens, self.max_new_tokens))
        prompts = [self._prompt_ids(messages)[0].tolist() for messages in conversations]
        results: list[Generation | PromptTooLong | None] = [None] * len(prompts)
        fitting = []
        for index, ids in enumerate(prompts):
            try:
                self._check_fits(len(ids), limit)
                fitting.append(index)
            except PromptTooLong as error:
                results[index] = error
        fitting.sort(key=lambda index: len(prompts[index]))
        step = max(1, batch_size)
        for start in range(0, len(fitting), step):
            batch = fitting[start:start + step]
            width = max(len(prompts[index]) for index in batch)
            padding = [width - len(prompts[index]) for index in batch]
            input_ids = torch.tensor([[self.pad_token_id] * pad + prompts[index]
                                      for index, pad in zip(batch, padding, strict=True)], device=self.device)
            attention_mask = torch.tensor([[0] * pad + [1] * (width - pad) for pad in padding], device=self.device)
            with self._lock, torch.no_grad():
                output = self.lm.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=limit,
                                          pad_token_id=self.pad_token_id, do_sample=False, top_p=None, top_k=None)
            for row, index in enumerate(batch):
                results[index] = self._generation(output[row, width:].tolist(), len(prompts[index]), limit)
        return results

    def complete_many(self, conversations: Sequence[Sequence[dict[str, str]]], max_tokens: int = 256,
                      **_: Any) -> list[ChatResult | ChatCallFailed]:
        """`complete` at temperature 0 for every conversation, decoded in batches (`generate_greedy_batch`):
        a ChatCallFailed in place of a reply that is empty or whose prompt is too long."""
        started = time.monotonic()
        generations = self.generate_greedy_batch(conversations, max_tokens)
        seconds = (time.monotonic() - started) / max(1, len(generations))
        return [self._chat_result(answer, seconds) for answer in generations]

    def _chat_result(self, answer: Generation | PromptTooLong, seconds: float) -> ChatResult | ChatCallFailed:
        """The labelling-backend view of one answer: ChatCallFailed for a prompt too long or an empty reply."""
        if isinstance(answer, PromptTooLong):
            return ChatCallFailed(str(answer), 1, {"prompt_tokens": 0, "completion_tokens": 0})
        if not answer.content:
            return ChatCallFailed("empty answer content", 1, {"prompt_tokens": answer.prompt_tokens,
                                                              "completion_tokens": answer.completion_tokens})
        return ChatResult(answer.content, self.model, answer.prompt_tokens, answer.completion_tokens, 0.0, 1,
                          seconds, answer.finish_reason)

    def choose(self, messages: Sequence[dict[str, str]], choices: Sequence[str]) -> Generation:
        """The choice c maximising log P(c | chat prompt) = Σ_t log p(c_t | prompt, c_<t). The prompt is run
        once; the choices then continue from its KV cache as one batch (right-padded: padding sits after
        every scored position, so it changes no score). completion_tokens is the chosen text's token count.
        PromptTooLong when the prompt and the longest choice do not fit the context."""
        import torch

        prompt_ids = self._prompt_ids(messages)
        encoded = [self.tokenizer.encode(choice, add_special_tokens=False) for choice in choices]
        if not all(encoded):
            raise ValueError(f"choose: a choice encodes to no tokens: {list(choices)!r}")
        self._check_fits(int(prompt_ids.shape[1]), max(len(ids) for ids in encoded))
        with self._lock, torch.no_grad():
            prompt_pass = self.lm(input_ids=prompt_ids, use_cache=True)
            first = torch.log_softmax(prompt_pass.logits[0, -1].float(), dim=-1)
            scores = [float(first[ids[0]]) for ids in encoded]
            width = max(len(ids) for ids in encoded) - 1
            if width:
                cache = prompt_pass.cache
                cache.batch_repeat_interleave(len(encoded))
                inputs = [ids[:-1] + [self.pad_token_id] * (width + 1 - len(ids)) for ids in encoded]
                logits = self.lm(input_ids=torch.tensor(inputs, device=self.device), cache=cache).logits
                log_probs = torch.log_softmax(logits.float(), dim=-1)
                for row, ids in enumerate(encoded):
                    scores[row] += float(sum(log_probs[row, t, ids[t + 1]] for t in range(len(ids) - 1)))
        best = max(range(len(choices)), key=scores.__getitem__)
        return Generation(choices[best], int(prompt_ids.shape[1]), len(encoded[best]), "stop")

    def answer(self, messages: Sequence[dict[str, str]], max_tokens: int, temperature: float,
               choices: Sequence[str] | None = None) -> Generation:
        """`choose` among `choices` when they are given, else `generate`: what a chat request asks for."""
        if choices:
            return self.choose(messages, choices)
        return self.generate(messages, max_tokens, temperature)

    def complete(self, messages: Sequence[dict[str, str]], temperature: float = 0.0, max_tokens: int = 256,
                 choices: Sequence[str] | None = None, **_: Any) -> ChatResult:
        """The labelling-backend view of `answer`; an empty reply or a prompt too long raises ChatCallFailed."""
        started = time.monotonic()
        try:
            answer: Generation | PromptTooLong = self.answer(messages, max_tokens, temperature, choices)
        except PromptTooLong as error:
            answer = error
        result = self._chat_result(answer, time.monotonic() - started)
        if isinstance(result, ChatCallFailed):
            raise result from None
        return result


class ChatGenerator(Protocol):
    """What the server needs from a model: its name and `answer` (LocalChatModel fits)."""

    model: str

    def answer(self, messages: Sequence[dict[str, str]], max_tokens: int, temperature: float,
               choices: Sequence[str] | None = None) -> Generation: ...


class _BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _TeacherHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the 40 ms delayed-ACK stall
    generator: ChatGenerator
    api_key_env: str | None
    timeout: float | None = DEFAULT_SOCKET_TIMEOUT_S  # StreamRequestHandler sets it on the connection's socket

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (its timeout) or stopped reading (ours)
            self.close_connection = True

    def _error(self, status: int, message: str, kind: str, close: bool = False) -> None:
        if close:  # the body was not (fully) read: the connection cannot carry another request
            self.close_connection = True
        self._send(status, {"error": {"message": message, "type": kind}})

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, {"status": "ok", "model": self.generator.model})
        elif self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [
                {"id": self.generator.model, "object": "model", "owned_by": "mangadistill"}]})
        else:
            self._error(404, f"no route {self.path}", "not_found")

    def _authorised(self) -> bool:
        """True without api_key_env; else the bearer token must equal the variable's value, which must be set."""
        if self.api_key_env is None:
            return True
        expected = os.environ.get(self.api_key_env)
        if not expected:
            logger.error("$%s is unset or empty: refusing every request", self.api_key_env)
            return False
        supplied = self.headers.get("Authorization") or ""
        return hmac.compare_digest(supplied.encode("utf-8", "surrogateescape"),
                                   f"Bearer {expected}".encode("utf-8", "surrogateescape"))

    def _read_body(self) -> bytes:
        """The body, exactly Content-Length bytes; _BadRequest for a bad header or a short body."""
        if self.headers.get("Transfer-Encoding"):
            raise _BadRequest("Transfer-Encoding is not supported; send the body with a Content-Length")
        values = self.headers.get_all("Content-Length") or []
        if len(values) != 1:
            raise _BadRequest("exactly one Content-Length header is required" if values else
                              "a Content-Length header is required")
        value = values[0].strip()
        if not _DIGITS.fullmatch(value):
            raise _BadRequest(f"Content-Length must be a non-negative integer, got {value[:40]!r}")
        length = int(value)
        if length > MAX_BODY_BYTES:
            raise _BadRequest(f"Content-Length {length} is over the limit of {MAX_BODY_BYTES} bytes")
        try:
            raw = self.rfile.read(length)
        except OSError as error:  # TimeoutError: the socket timeout passed with bytes still missing
            waited = f" within {self.timeout:g} s" if isinstance(error, TimeoutError) else ""
            raise _BadRequest(f"the body is shorter than its Content-Length of {length} bytes (not all "
                              f"received{waited})") from None
        if len(raw) < length:
            raise _BadRequest(f"the body is shorter than its Content-Length of {length} bytes (the client closed)")
        return raw

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route {self.path}", "not_found", close=True)
            return
        if not self._authorised():
            self._error(401, "missing or wrong bearer token", "authentication_error", close=True)
            return
        try:
            raw = self._read_body()
        except _BadRequest as error:
            self._error(400, error.message, "invalid_request_error", close=True)
            return
        try:
            request = _parse_request(raw, self.generator.model)
        except LookupError as error:
            self._error(404, str(error), "model_not_found")
            return
        except ValueError as error:
            self._error(400, str(error), "invalid_request_error")
            return
        try:
            answer = self.generator.answer(request["messages"], request["max_tokens"], request["temperature"],
                                           request["choices"])
        except PromptTooLong as error:
            self._error(400, str(error), "context_length_exceeded")
            return
        except Exception as error:  # the model failed: say so, keep serving
            logger.exception("generation failed")
            self._error(500, f"the model failed on this request ({type(error).__name__}); see the server log",
                        "server_error")
            return
        self._send(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.generator.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.content},
                         "finish_reason": answer.finish_reason}],
            "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                      "total_tokens": answer.prompt_tokens + answer.completion_tokens},
        })


def _parse_request(raw: bytes, served_model: str) -> dict[str, Any]:
    """messages, max_tokens, temperature and choices (None when absent: `structured_outputs.choice`, or the
    older `guided_choice`) from a chat-completions body; ValueError / LookupError say why."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    if body.get("model") not in (None, served_model):
        raise LookupError(f"model {body.get('model')!r} is not served here; this server serves {served_model!r}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise ValueError("'messages' must be a non-empty list of {role, content} objects with text content")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 256))
    temperature = body.get("temperature", 1.0)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"'max_tokens' must be a positive integer, got {max_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise ValueError(f"'temperature' must be a number in [0, 2], got {temperature!r}")
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens, "temperature": float(temperature), "choices": _requested_choices(body)}


def _requested_choices(body: dict[str, Any]) -> list[str] | None:
    """The choice list of `structured_outputs.choice` (vLLM >= 0.12) or `guided_choice` (older vLLM); None
    when the body constrains nothing. ValueError for both at once, for a malformed list, or for a constraint
    this server cannot honour (structured_outputs other than choice, guided_json, response_format json_schema)."""
    structured = body.get("structured_outputs")
    if structured is not None:
        if not isinstance(structured, dict) or set(structured) != {"choice"}:
            raise ValueError(f"'structured_outputs' must be {{\"choice\": [...]}} here (this server honours "
                             f"choices only), got {str(structured)[:120]}")
        if "guided_choice" in body:
            raise ValueError("send 'structured_outputs' or 'guided_choice', not both")
    for unsupported in ("guided_json", "guided_regex", "guided_grammar"):
        if unsupported in body:
            raise ValueError(f"'{unsupported}' is not supported by this server (choices only)")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise ValueError(f"'response_format' {str(response_format)[:120]} is not supported by this server")
    name = "structured_outputs.choice" if structured is not None else "guided_choice"
    choices = structured["choice"] if structured is not None else body.get("guided_choice")
    if choices is not None and (
        not isinstance(choices, list) or not 0 < len(choices) <= MAX_GUIDED_CHOICES
        or not all(isinstance(c, str) and c for c in choices)
    ):
        raise ValueError(f"'{name}' must be a list of 1 to {MAX_GUIDED_CHOICES} non-empty strings, "
                         f"got {str(choices)[:120]}")
    return choices


_BUSY_BODY = json.dumps({"error": {"message": "every worker is busy; retry later", "type": "server_busy"}}).encode()
_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                  b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)


class BoundedThreadingHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with at most `max_workers` connections served at once. A further connection waits
    up to `queue_timeout_s` for a worker (and the ones behind it wait in the listen backlog), then gets 503."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_workers: int,
                 queue_timeout_s: float) -> None:
        if max_workers < 1 or queue_timeout_s < 0:
            raise ValueError("need max_workers >= 1 and queue_timeout_s >= 0")
        self.max_workers = max_workers
        self.queue_timeout_s = queue_timeout_s
        self.refused = 0
        self._workers = threading.BoundedSemaphore(max_workers)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._workers.acquire(timeout=self.queue_timeout_s):
            self.refused += 1
            self._refuse(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._workers.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._workers.release()

    @staticmethod
    def _refuse(request: socket.socket) -> None:
        """503 with Retry-After: 1; reads what the client already sent first, so the close is not a reset."""
        with contextlib.suppress(OSError):
            request.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                request.recv(MAX_BODY_BYTES)
            request.sendall(_BUSY_RESPONSE)


class TeacherServer:
    """A bounded ThreadingHTTPServer around a model (a `LocalChatModel`); `start()` runs it in a daemon thread
    (tests, bench). ServerKeyMissing when `api_key_env` is given but unset or empty."""

    def __init__(self, generator: ChatGenerator, host: str = "127.0.0.1", port: int = 0,
                 api_key_env: str | None = None, socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
                 max_workers: int = DEFAULT_MAX_WORKERS, queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S) -> None:
        require_api_key(api_key_env)
        if not socket_timeout_s > 0:
            raise ValueError("need socket_timeout_s > 0")
        handler = type("Handler", (_TeacherHandler,), {"generator": generator, "api_key_env": api_key_env,
                                                       "timeout": socket_timeout_s})
        self.httpd = BoundedThreadingHTTPServer((host, port), handler, max_workers, queue_timeout_s)
        self.generator = generator
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """http://host:port/v1, the base URL a ChatClient takes."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> TeacherServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.1,), name="teacher-server",
                                        daemon=True)  # polls for shutdown every 0.1 s: close() is quick
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()

    def __enter__(self) -> TeacherServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(host: str = "127.0.0.1", port: int = 8000, model: str = DEFAULT_MODEL, name: str | None = None,
          device: str = "cpu", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, api_key_env: str | None = None,
          socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S, max_workers: int = DEFAULT_MAX_WORKERS) -> None:
    """Load `model` (a builtin name, folder or gs:// prefix) and serve it until interrupted; ServerKeyMissing
    before anything is loaded when `api_key_env` is given but unset or empty."""
    require_api_key(api_key_env)
    server = TeacherServer(LocalChatModel(model, name=name, device=device, max_new_tokens=max_new_tokens),
                           host, port, api_key_env, socket_timeout_s=socket_timeout_s, max_workers=max_workers)
    logger.info("serving %s at %s", server.generator.model, server.base_url)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        server.httpd.server_close()
