"""The chat-completions client against a real local HTTP server that misbehaves on request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from fakes import CLIENT_TIMEOUT_S, RETRY_AFTER_S, USAGE, FakeChatServer

from mangadistill.core.chat_api import (
    MAX_RETRY_AFTER_S,
    AnswerRejected,
    ChatAPIFatalError,
    ChatCallFailed,
    ChatClient,
    PriceTable,
    retry_after_seconds,
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
