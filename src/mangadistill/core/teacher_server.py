"""`mangadistill serve-teacher`: a local instruct model behind an OpenAI-compatible HTTP API.

The local demo and the tests label through the same HTTP path (`mangadistill.core.chat_api.ChatClient`) as
production does against a managed LLM. Endpoints:

- POST /v1/chat/completions: {"model", "messages": [{"role", "content"}], "max_tokens", "temperature"} ->
  {"id", "object": "chat.completion", "created", "model", "choices": [{"index": 0, "message": {"role":
  "assistant", "content"}, "finish_reason": "stop" | "length"}], "usage": {"prompt_tokens",
  "completion_tokens", "total_tokens"}}. The prompt is the tokenizer's chat template over the messages with
  the generation prompt; temperature 0 decodes greedily, above 0 samples. max_tokens is capped at the
  server's `max_new_tokens`. With vLLM's `"guided_choice": [text, ...]` extension the answer is exactly one
  of the given texts: the one with the highest log-likelihood after the prompt (`LocalChatModel.choose`).
- GET /v1/models: {"object": "list", "data": [{"id", "object": "model", "owned_by"}]}.
- GET /healthz: {"status": "ok", "model"}.

Errors follow OpenAI's shape {"error": {"message", "type"}}: 400 for a bad body, 404 for another model name
or path, 401 when the server was given `api_key_env`, that variable is set, and the request's bearer token
differs. One generation runs at a time (a lock); HTTP requests are served by one thread each.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mangadistill.core.chat_api import ChatCallFailed, ChatResult
from mangadistill.core.models import resolve_model

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_MAX_NEW_TOKENS = 512
MAX_BODY_BYTES = 1 << 20
MAX_GUIDED_CHOICES = 16
"""Each choice costs a forward pass."""


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
        self._lock = threading.Lock()

    def _prompt_ids(self, messages: Sequence[dict[str, str]]):
        """The chat template over `messages` with the generation prompt, as a (1, n) tensor on the device."""
        return self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"].to(self.device)

    def generate(self, messages: Sequence[dict[str, str]], max_tokens: int, temperature: float) -> Generation:
        """The assistant's reply to `messages`: at most min(max_tokens, max_new_tokens) new tokens."""
        import torch

        prompt_ids = self._prompt_ids(messages)
        limit = max(1, min(max_tokens, self.max_new_tokens))
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
        new_ids = output[0, prompt_ids.shape[1]:].tolist()
        stopped = bool(new_ids) and new_ids[-1] == self.tokenizer.eos_token_id
        content = self.tokenizer.decode(new_ids, skip_special_tokens=True).strip()
        finish_reason = "stop" if stopped or len(new_ids) < limit else "length"
        return Generation(content, int(prompt_ids.shape[1]), len(new_ids), finish_reason)

    def choose(self, messages: Sequence[dict[str, str]], choices: Sequence[str]) -> Generation:
        """The choice c maximising log P(c | chat prompt) = Σ_t log p(c_t | prompt, c_<t), scored by one
        forward pass per choice; completion_tokens is the chosen text's token count."""
        import torch

        prompt_ids = self._prompt_ids(messages)
        scores, lengths = [], []
        with self._lock, torch.no_grad():
            for choice in choices:
                choice_ids = torch.tensor([self.tokenizer.encode(choice, add_special_tokens=False)],
                                          device=self.device)
                logits = self.lm(input_ids=torch.cat([prompt_ids, choice_ids], dim=1)).logits
                log_probs = torch.log_softmax(logits[0, prompt_ids.shape[1] - 1:-1].float(), dim=-1)
                scores.append(float(log_probs.gather(1, choice_ids[0, :, None]).sum()))
                lengths.append(choice_ids.shape[1])
        best = max(range(len(choices)), key=scores.__getitem__)
        return Generation(choices[best], int(prompt_ids.shape[1]), lengths[best], "stop")

    def answer(self, messages: Sequence[dict[str, str]], max_tokens: int, temperature: float,
               guided_choice: Sequence[str] | None = None) -> Generation:
        """`choose` among `guided_choice` when it is given, else `generate`: what a chat request asks for."""
        if guided_choice:
            return self.choose(messages, guided_choice)
        return self.generate(messages, max_tokens, temperature)

    def complete(self, messages: Sequence[dict[str, str]], temperature: float = 0.0, max_tokens: int = 256,
                 guided_choice: Sequence[str] | None = None, **_: Any) -> ChatResult:
        """The labelling-backend view of `answer`; an empty reply raises ChatCallFailed."""
        started = time.monotonic()
        answer = self.answer(messages, max_tokens, temperature, guided_choice)
        if not answer.content:
            raise ChatCallFailed("empty answer content", 1, {"prompt_tokens": answer.prompt_tokens,
                                                             "completion_tokens": answer.completion_tokens})
        return ChatResult(answer.content, self.model, answer.prompt_tokens, answer.completion_tokens, 0.0, 1,
                          time.monotonic() - started, answer.finish_reason)


class _TeacherHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the 40 ms delayed-ACK stall
    generator: LocalChatModel
    api_key_env: str | None

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            self.close_connection = True

    def _error(self, status: int, message: str, kind: str) -> None:
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
        expected = os.environ.get(self.api_key_env) if self.api_key_env else None
        return not expected or self.headers.get("Authorization") == f"Bearer {expected}"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413, f"body over {MAX_BODY_BYTES} bytes", "invalid_request_error")
            return
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route {self.path}", "not_found")
            return
        if not self._authorised():
            self._error(401, "missing or wrong bearer token", "authentication_error")
            return
        try:
            request = _parse_request(raw, self.generator.model)
        except LookupError as error:
            self._error(404, str(error), "model_not_found")
            return
        except ValueError as error:
            self._error(400, str(error), "invalid_request_error")
            return
        answer = self.generator.answer(request["messages"], request["max_tokens"], request["temperature"],
                                       request["guided_choice"])
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
    """messages, max_tokens, temperature and guided_choice (None when absent) from a chat-completions body;
    ValueError / LookupError say why."""
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
    guided_choice = body.get("guided_choice")
    if guided_choice is not None and (
        not isinstance(guided_choice, list) or not 0 < len(guided_choice) <= MAX_GUIDED_CHOICES
        or not all(isinstance(c, str) and c for c in guided_choice)
    ):
        raise ValueError(f"'guided_choice' must be a list of 1 to {MAX_GUIDED_CHOICES} non-empty strings, "
                         f"got {str(guided_choice)[:120]}")
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens, "temperature": float(temperature), "guided_choice": guided_choice}


class TeacherServer:
    """A ThreadingHTTPServer around a `LocalChatModel`; `start()` runs it in a daemon thread (tests, bench)."""

    def __init__(self, generator: LocalChatModel, host: str = "127.0.0.1", port: int = 0,
                 api_key_env: str | None = None) -> None:
        handler = type("Handler", (_TeacherHandler,), {"generator": generator, "api_key_env": api_key_env})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.generator = generator
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """http://host:port/v1, the base URL a ChatClient takes."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> TeacherServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="teacher-server", daemon=True)
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
          device: str = "cpu", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, api_key_env: str | None = None) -> None:
    """Load `model` (a builtin name, folder or gs:// prefix) and serve it until interrupted."""
    server = TeacherServer(LocalChatModel(model, name=name, device=device, max_new_tokens=max_new_tokens),
                           host, port, api_key_env)
    logger.info("serving %s at %s", server.generator.model, server.base_url)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        server.httpd.server_close()
