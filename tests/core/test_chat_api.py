"""The chat-completions client against a real local HTTP server that misbehaves on request."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fakes import CLIENT_TIMEOUT_S, RETRY_AFTER_S, USAGE, FakeChatServer

from mangadistill.core.chat_api import (
    MAX_RETRY_AFTER_S,
    AnswerRejected,
    ChatAPIFatalError,
    ChatBudgetExhausted,
    ChatCallFailed,
    ChatClient,
    PriceTable,
    retry_after_seconds,
    structured_fields,
)

SECRET = "sk-test-0a1b2c3d4e5f"


@pytest.fixture
def fake_api(monkeypatch) -> Iterator[FakeChatServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.delenv("TEACHER_API_KEY", raising=False)
    server = FakeChatServer()
    yield server
    server.close()


@pytest.fixture
def prices(tmp_path) -> PriceTable:
    path = tmp_path / "prices.yaml"
    path.write_text("version: test/1\ncurrency: USD\nmodels:\n  fake-teacher: {input: 2.0, output: 8.0}\n")
    return PriceTable.load(str(path))


def client_for(server: FakeChatServer, prices: PriceTable | None = None, **overrides) -> ChatClient:
    options = {"timeout_s": 5.0, "max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05}
    options.update(overrides)
    return ChatClient(server.base_url, "fake-teacher", prices=prices, **options)


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "be nice"}, {"role": "user", "content": text}]


def test_answer_usage_and_cost_come_from_the_price_table(fake_api, prices):
    client = client_for(fake_api, prices)
    result = client.complete(messages("is volume 3 out?"), max_tokens=77)
    assert result.content == "answer: is volume 3 out?"
    assert (result.prompt_tokens, result.completion_tokens, result.attempts) == (120, 30, 1)
    assert result.cost_usd == pytest.approx(120 / 1e6 * 2.0 + 30 / 1e6 * 8.0)
    sent = fake_api.requests[0]["request"]
    assert (sent["model"], sent["max_tokens"], sent["temperature"]) == ("fake-teacher", 77, 0.0)
    assert client.usage.cost_usd == pytest.approx(result.cost_usd)


SCHEMA = {"type": "object", "properties": {"winner": {"enum": ["A", "B", "tie"]}}, "required": ["winner"],
          "additionalProperties": False}


def test_constrained_answers_use_vllm_current_fields_by_default(fake_api):
    client = client_for(fake_api)
    client.complete(messages("A or B?"), choices=["A", "B"])
    client.complete(messages("which?"), json_schema=SCHEMA)
    client.complete(messages("free text"))
    choice, schema, free = (request["request"] for request in fake_api.requests)
    assert choice["structured_outputs"] == {"choice": ["A", "B"]} and "guided_choice" not in choice
    assert schema["response_format"] == {"type": "json_schema",
                                         "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
    assert "guided_json" not in schema and "structured_outputs" not in schema
    assert not {"structured_outputs", "guided_choice", "guided_json", "response_format"} & set(free)


def test_the_guided_fields_of_older_vllm_are_sent_when_asked_for(fake_api):
    client = client_for(fake_api, structured_api="guided")
    client.complete(messages("A or B?"), choices=["A", "B"])
    client.complete(messages("which?"), json_schema=SCHEMA)
    choice, schema = (request["request"] for request in fake_api.requests)
    assert choice["guided_choice"] == ["A", "B"] and "structured_outputs" not in choice
    assert schema["guided_json"] == SCHEMA and "response_format" not in schema


def test_constraints_are_refused_when_they_cannot_be_sent():
    with pytest.raises(ValueError, match="structured_api must be one of"):
        ChatClient("http://127.0.0.1:9/v1", "m", structured_api="outlines")
    with pytest.raises(ValueError, match="not both"):
        structured_fields("structured_outputs", choices=["A"], json_schema=SCHEMA)
    assert structured_fields("guided") == {}


def test_retry_after_on_429_is_honoured_not_the_backoff(fake_api):
    started = time.monotonic()
    result = client_for(fake_api).complete(messages("hello [429]"))
    assert time.monotonic() - started >= RETRY_AFTER_S
    assert result.attempts == 2 and fake_api.attempts["hello [429]"] == 2


def test_500_and_timeouts_are_retried(fake_api):
    client = client_for(fake_api, timeout_s=CLIENT_TIMEOUT_S)
    assert client.complete(messages("a [500]")).attempts == 2
    assert client.complete(messages("b [slow]")).attempts == 2
    assert client.usage.by_status["500"] == 1 and client.usage.by_status["ReadTimeout"] == 1
    assert client.usage.retries == 2 and client.usage.failures == 0


@pytest.mark.parametrize(("marker", "reason"), [
    ("[empty]", "empty answer content"),
    ("[malformed]", "not JSON"),
    ("[nochoices]", "no choices"),
    ("[503-always]", "HTTP 503"),
])
def test_a_request_that_never_gets_an_answer_fails_with_the_reason_and_its_cost(fake_api, prices, marker, reason):
    client = client_for(fake_api, prices, max_retries=2)
    with pytest.raises(ChatCallFailed, match=reason) as failure:
        client.complete(messages(f"x {marker}"))
    assert failure.value.attempts == 3 and fake_api.attempts[f"x {marker}"] == 3
    billed = 3 * USAGE["completion_tokens"] if marker in ("[empty]", "[nochoices]") else 0
    assert failure.value.usage["completion_tokens"] == billed  # answers that arrived are billed, even bad ones
    assert client.usage.failures == 1


def test_validate_can_refuse_an_answer_and_have_it_asked_again(fake_api):
    seen = []

    def validate(content: str) -> None:
        seen.append(content)
        if len(seen) == 1:
            raise AnswerRejected("first answer refused")

    result = client_for(fake_api).complete(messages("hi"), validate=validate)
    assert result.attempts == 2 and len(seen) == 2


@pytest.mark.parametrize("status_marker", ["[401]", "[403]"])
def test_a_rejected_key_is_fatal_at_once(fake_api, status_marker):
    with pytest.raises(ChatAPIFatalError, match=rf"HTTP {status_marker[1:4]}.*TEACHER_API_KEY"):
        client_for(fake_api).complete(messages(f"hi {status_marker}"))
    assert fake_api.attempts[f"hi {status_marker}"] == 1


def test_wrong_path_is_fatal(fake_api):
    client = ChatClient(fake_api.base_url + "/nowhere", "fake-teacher", max_retries=3)
    with pytest.raises(ChatAPIFatalError, match="HTTP 404"):
        client.complete(messages("hi"))
    assert len(fake_api.requests) == 1


def test_concurrency_limit_holds_across_threads(fake_api):
    fake_api.latency_s = 0.1
    client = client_for(fake_api, concurrency=3)
    threads = [threading.Thread(target=client.complete, args=(messages(f"m{i}"),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fake_api.max_in_flight == 3 and len(fake_api.requests) == 8


def test_key_is_read_per_request_and_never_logged(fake_api, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    client = client_for(fake_api, max_retries=1)
    client.complete(messages("before"))
    monkeypatch.setenv("TEACHER_API_KEY", SECRET)  # a rotated secret is picked up without a restart
    client.complete(messages("after [500]"))
    with pytest.raises(ChatCallFailed):
        client.complete(messages("z [empty]"))
    assert [call["auth"] for call in fake_api.requests] == [None] + [f"Bearer {SECRET}"] * 4
    assert "retrying" in caplog.text and "failed" in caplog.text
    assert SECRET not in caplog.text and SECRET not in repr(vars(client))


def test_unreachable_server_fails_after_retries():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ChatClient(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff_base_s=0.01)
    with pytest.raises(ChatCallFailed, match="ConnectionError") as failure:
        client.complete(messages("hi"))
    assert failure.value.attempts == 2


def test_backoff_is_exponential_capped_and_jittered():
    client = ChatClient("http://127.0.0.1:9/v1", "m", backoff_base_s=1.0, backoff_max_s=5.0)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 5.0)]:
        waits = [client.backoff_s(attempt) for _ in range(200)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
        assert len(set(waits)) > 1


def test_retry_after_reads_seconds_dates_and_clamps():
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("99999") == MAX_RETRY_AFTER_S
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("later") is None and retry_after_seconds(None) is None


def test_packaged_price_table_prices_the_local_demo_at_zero_and_refuses_unknown_models(tmp_path):
    table = PriceTable.load()
    assert table.version and table.currency == "USD"
    assert table.cost("smollm2-135m", 10**6, 10**6) == 0.0
    assert table.cost("managed-teacher-v07", 10**6, 10**6) > 0
    with pytest.raises(KeyError, match="no price for model 'nope'"):
        table.price("nope")
    with pytest.raises(KeyError, match="no price"):
        ChatClient("http://127.0.0.1:9/v1", "nope", prices=table)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: x\nmodels:\n  m: {input: cheap, output: 1}\n")
    with pytest.raises(ValueError, match="model 'm' needs numeric"):
        PriceTable.load(str(bad))


# --- transport failures, deadlines and budgets, against scripted real servers ---------------------------------

GOOD_BODY = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                                     "finish_reason": "stop"}], "usage": USAGE}).encode()
DRIP_EVERY_S = 0.25  # under the per-read timeout: only a total deadline can stop it


class ScriptedServer:
    """A real HTTP server whose `script(handler, attempt)` writes each response by hand (raw bytes allowed)."""

    def __init__(self, script: Callable[[BaseHTTPRequestHandler, int], None]) -> None:
        self.attempts = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                with server.lock:
                    server.attempts += 1
                    attempt = server.attempts
                try:
                    script(self, attempt)
                except OSError:  # the client cut the connection
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted(monkeypatch) -> Iterator[Callable[..., ScriptedServer]]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    servers: list[ScriptedServer] = []

    def start(script: Callable[[BaseHTTPRequestHandler, int], None]) -> ScriptedServer:
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def answer(handler: BaseHTTPRequestHandler, status: int = 200, body: bytes = GOOD_BODY,
           headers: dict[str, str] | None = None, length: int | None = None) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.mark.parametrize("fault", ["short-body", "cut-json", "reset"])
def test_a_truncated_or_dropped_answer_is_retried(scripted, fault):
    def script(handler, attempt):
        if attempt > 1:
            answer(handler)
        elif fault == "short-body":  # Content-Length promises more than arrives: ChunkedEncodingError
            answer(handler, body=GOOD_BODY[:20], length=len(GOOD_BODY))
            handler.close_connection = True
        elif fault == "cut-json":  # complete by its Content-Length, but not JSON
            answer(handler, body=GOOD_BODY[:20])
        else:
            handler.close_connection = True  # closes with no answer at all: ConnectionError

    server = scripted(script)
    client = ChatClient(server.base_url, "m", max_retries=2, backoff_base_s=0.01, backoff_max_s=0.02)
    result = client.complete(messages("hi"))
    assert (result.content, result.attempts, server.attempts) == ("fine", 2, 2)
    assert client.usage.retries == 1 and client.usage.failures == 0


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_dripping_server_is_cut_at_the_request_deadline(scripted, where):
    def script(handler, attempt):
        if where == "headers":
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(100):
                handler.wfile.write(b"X-Drip: 1\r\n")
                handler.wfile.flush()
                time.sleep(DRIP_EVERY_S)
        answer(handler, body=b"", length=len(GOOD_BODY))
        for byte in GOOD_BODY:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(DRIP_EVERY_S)

    server = scripted(script)
    client = ChatClient(server.base_url, "m", timeout_s=1.0, max_retries=3, deadline_s=1.5, backoff_base_s=0.01)
    started = time.monotonic()
    with pytest.raises(ChatCallFailed, match=r"deadline of 1.5 s passed") as failure:
        client.complete(messages("hi"))
    assert time.monotonic() - started < 1.5 + 0.5  # the answer alone would take len(GOOD_BODY) * 0.25 s
    assert failure.value.attempts == 1 and server.attempts == 1 and client.usage.by_status == {"deadline": 1}


@pytest.mark.parametrize(("status", "attempts"), [(400, 1), (409, 1), (422, 1), (408, 2), (429, 2)])
def test_only_408_and_429_of_the_4xx_are_retried(scripted, status, attempts):
    def script(handler, attempt):
        if attempt == 1:
            answer(handler, status, json.dumps({"error": {"message": "no"}}).encode())
        else:
            answer(handler)

    server = scripted(script)
    client = ChatClient(server.base_url, "m", max_retries=3, backoff_base_s=0.01, backoff_max_s=0.02)
    if attempts == 1:
        with pytest.raises(ChatCallFailed, match=f"HTTP {status} \\(not retried\\)"):
            client.complete(messages("hi"))
    else:
        assert client.complete(messages("hi")).attempts == attempts
    assert server.attempts == attempts


def test_a_retry_after_past_the_deadline_fails_at_once(scripted):
    server = scripted(lambda handler, attempt: answer(handler, 429, b"{}", {"Retry-After": "86400"}))
    client = ChatClient(server.base_url, "m", timeout_s=5.0, max_retries=4)
    started = time.monotonic()
    with pytest.raises(ChatCallFailed, match=r"Retry-After 86400 s; not retrying: the wait of 86400 s ends past"):
        client.complete(messages("hi"))
    assert time.monotonic() - started < 1.0 and server.attempts == 1


def test_a_retry_after_within_the_deadline_is_waited_for(scripted):
    def script(handler, attempt):
        answer(handler, 503, b"{}", {"Retry-After": "0.3"}) if attempt == 1 else answer(handler)

    server = scripted(script)
    started = time.monotonic()
    result = ChatClient(server.base_url, "m", deadline_s=2.0).complete(messages("hi"))
    assert result.attempts == 2 and 0.3 <= time.monotonic() - started < 2.0


def test_the_run_budget_stops_the_client(scripted):
    def script(handler, attempt):
        time.sleep(0.3)
        answer(handler)

    server = scripted(script)
    client = ChatClient(server.base_url, "m", timeout_s=5.0, budget_s=0.5)
    assert client.complete(messages("first")).content == "fine"  # the budget starts with the first request
    with pytest.raises(ChatBudgetExhausted, match=r"time budget of 0\.5 s ran out"):
        client.complete(messages("second"))  # cut at the budget's end, 0.2 s in
    sent = server.attempts
    started = time.monotonic()
    with pytest.raises(ChatBudgetExhausted, match="is spent"):
        client.complete(messages("third"))
    assert server.attempts == sent == 2 and time.monotonic() - started < 0.1
    assert issubclass(ChatBudgetExhausted, ChatAPIFatalError)  # a stage stops instead of failing every row


def test_waiting_for_a_concurrency_slot_counts_toward_the_deadline(scripted):
    def script(handler, attempt):
        time.sleep(1.0)
        answer(handler)

    server = scripted(script)
    client = ChatClient(server.base_url, "m", concurrency=1, deadline_s=5.0, max_retries=0)
    busy = threading.Thread(target=lambda: client.complete(messages("first")), daemon=True)
    busy.start()
    time.sleep(0.1)
    client.deadline_s = 0.5  # the second request's deadline passes while the first holds the only slot
    started = time.monotonic()
    with pytest.raises(ChatCallFailed, match="no concurrency slot came free"):
        client.complete(messages("second"))
    assert time.monotonic() - started < 0.9
    busy.join()
