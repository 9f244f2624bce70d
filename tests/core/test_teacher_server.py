"""serve-teacher: a local causal LM behind the OpenAI-compatible HTTP API, used through ChatClient."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama

from mangadistill.core import teacher_server
from mangadistill.core.chat_api import ChatAPIFatalError, ChatCallFailed, ChatClient
from mangadistill.core.teacher_server import (
    MAX_BODY_BYTES,
    Generation,
    LocalChatModel,
    ServerKeyMissing,
    TeacherServer,
)
from mangadistill.response.cache import ResponseCache
from mangadistill.response.labeling import label_responses
from mangadistill.sample_data.catalog import catalog_records

MESSAGES = [{"role": "system", "content": "Classify this customer message."},
            {"role": "user", "content": "refund my order now please"}]
REAL_MODEL_BUDGET_S = 30.0
LABELLING_PROMPT_TOKENS = 4096  # a grounded labelling prompt is ~3,100 tokens of this small tokenizer


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> LocalChatModel:
    tokenizer = build_chat_tokenizer([message["content"] for message in MESSAGES] + PROMPTS + RESPONSES, 300)
    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny-chat-lm"), tokenizer, layers=2,  # untied: non-empty replies
                              max_positions=LABELLING_PROMPT_TOKENS, tie_embeddings=False)
    return LocalChatModel(str(folder), name="tiny-teacher", max_new_tokens=6)


@pytest.fixture
def server(tiny_model, monkeypatch) -> Iterator[TeacherServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with TeacherServer(tiny_model) as running:
        yield running


def test_chat_completion_applies_the_template_and_counts_tokens(server, tiny_model):
    body = requests.post(f"{server.base_url}/chat/completions", timeout=30, json={
        "model": "tiny-teacher", "messages": MESSAGES, "max_tokens": 50, "temperature": 0}).json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny-teacher"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    template_ids = tiny_model.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=True)
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(template_ids["input_ids"])
    assert 1 <= usage["completion_tokens"] <= 6  # capped at the server's max_new_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert choice["finish_reason"] in ("stop", "length")


def test_models_and_health(server):
    models = requests.get(f"{server.base_url}/models", timeout=5).json()
    assert [entry["id"] for entry in models["data"]] == ["tiny-teacher"]
    assert requests.get(server.base_url.removesuffix("/v1") + "/healthz", timeout=5).json()["status"] == "ok"


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"model": "gpt-9", "messages": MESSAGES}, 404, "not served here"),
    ({"model": "tiny-teacher", "messages": []}, 400, "non-empty list"),
    ({"model": "tiny-teacher", "messages": [{"role": "user", "content": 3}]}, 400, "text content"),
    ({"model": "tiny-teacher", "messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny-teacher", "messages": MESSAGES, "temperature": "hot"}, 400, "temperature"),
    ({"model": "tiny-teacher", "messages": MESSAGES, "guided_choice": []}, 400, "guided_choice"),
    ({"model": "tiny-teacher", "messages": MESSAGES, "guided_choice": ["yes", 2]}, 400, "guided_choice"),
    ({"model": "tiny-teacher", "messages": MESSAGES, "structured_outputs": {"choice": []}}, 400,
     "structured_outputs.choice"),
    ({"model": "tiny-teacher", "messages": MESSAGES, "structured_outputs": {"json": {"type": "object"}}}, 400,
     "choices only"),
    ({"model": "tiny-teacher", "messages": MESSAGES, "structured_outputs": {"choice": ["a"]},
      "guided_choice": ["a"]}, 400, "not both"),
    ({"model": "tiny-teacher", "messages": MESSAGES, "guided_json": {"type": "object"}}, 400, "guided_json"),
    ({"model": "tiny-teacher", "messages": MESSAGES,
      "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, 400,
     "response_format"),
])
def test_bad_requests_get_openai_style_errors(server, body, status, message):
    response = requests.post(f"{server.base_url}/chat/completions", json=body, timeout=10)
    assert response.status_code == status and message in response.json()["error"]["message"]
    garbage = requests.post(f"{server.base_url}/chat/completions", data=b"{not json", timeout=10)
    assert garbage.status_code == 400


def test_greedy_answers_are_the_same_through_http_and_in_process(server, tiny_model, tmp_path):
    client = ChatClient(server.base_url, "tiny-teacher", concurrency=2)
    over_http = client.complete(MESSAGES, max_tokens=6)
    in_process = tiny_model.complete(MESSAGES, max_tokens=6)
    assert over_http.content == in_process.content
    assert (over_http.prompt_tokens, over_http.completion_tokens) == (in_process.prompt_tokens,
                                                                      in_process.completion_tokens)


def test_a_choice_constraint_old_or_new_answers_the_most_likely_choice_whatever_the_order(server, tiny_model):
    greedy = tiny_model.generate(MESSAGES, max_tokens=2, temperature=0.0)
    greedy_text = tiny_model.tokenizer.decode(
        tiny_model.tokenizer.encode(greedy.content, add_special_tokens=False)[:2])  # round-trips to its tokens
    others = [text for text in RESPONSES[:3] if text != greedy_text]
    current = ChatClient(server.base_url, "tiny-teacher", max_retries=0)  # structured_outputs.choice
    older = ChatClient(server.base_url, "tiny-teacher", max_retries=0, structured_api="guided")  # guided_choice
    for client in (current, older):
        for choices in ([greedy_text, *others], [*reversed(others), greedy_text]):
            result = client.complete(MESSAGES, choices=choices)
            assert result.content == greedy_text and result.finish_reason == "stop"
    assert result.completion_tokens == len(tiny_model.tokenizer.encode(greedy_text, add_special_tokens=False))
    assert tiny_model.complete(MESSAGES, choices=others).content in others


def _full_pass_log_prob(model: LocalChatModel, messages, choice: str) -> float:
    """log P(choice | prompt) from one forward pass over prompt + choice: the reference `choose` must match."""
    import torch

    prompt = model._prompt_ids(messages)
    ids = torch.tensor([model.tokenizer.encode(choice, add_special_tokens=False)])
    with torch.no_grad():
        logits = model.lm(input_ids=torch.cat([prompt, ids], dim=1)).logits
    log_probs = torch.log_softmax(logits[0, prompt.shape[1] - 1:-1], dim=-1)
    return float(log_probs.gather(1, ids[0, :, None]).sum())


@pytest.mark.parametrize("prompt", PROMPTS)
def test_choose_runs_the_prompt_once_and_picks_what_a_full_pass_scores_highest(tiny_model, prompt):
    messages = [{"role": "user", "content": prompt}]
    choices = ["{\"winner\": \"A\"}", "{\"winner\": \"B\"}", "{\"winner\": \"tie\"}", *RESPONSES]
    expected = max(choices, key=lambda choice: _full_pass_log_prob(tiny_model, messages, choice))
    prompt_tokens = int(tiny_model._prompt_ids(messages).shape[1])
    seen_lengths: list[int] = []
    hook = tiny_model.lm.register_forward_pre_hook(
        lambda _module, _args, kwargs: seen_lengths.append(int(kwargs["input_ids"].shape[1])), with_kwargs=True)
    try:
        chosen = tiny_model.choose(messages, choices)
    finally:
        hook.remove()
    assert chosen.content == expected
    assert seen_lengths.count(prompt_tokens) == 1 and max(seen_lengths[1:]) < prompt_tokens  # one prompt pass


def test_a_greedy_batch_answers_what_one_at_a_time_answers_in_the_order_given(tiny_model):
    conversations = [[{"role": "user", "content": prompt}] for prompt in PROMPTS] + [MESSAGES]
    one_at_a_time = [tiny_model.generate(messages, max_tokens=5, temperature=0.0) for messages in conversations]
    assert len({answer.content for answer in one_at_a_time}) > 1  # else order could not show
    batched = tiny_model.generate_greedy_batch(conversations, max_tokens=5, batch_size=3)
    assert batched == one_at_a_time


def test_a_prompt_too_long_fails_alone_in_a_batch(tiny_model):
    too_long = [{"role": "user", "content": " ".join(PROMPTS * 200)}]
    fine = [{"role": "user", "content": PROMPTS[0]}]
    results = tiny_model.complete_many([fine, too_long, fine], max_tokens=4)
    assert [type(result).__name__ for result in results] == ["ChatResult", "ChatCallFailed", "ChatResult"]
    assert "exceeds the model's context" in results[1].reason
    assert results[0].content == tiny_model.complete(fine, max_tokens=4).content


def test_labelling_goes_through_the_server_like_production(server, tmp_path):
    client = ChatClient(server.base_url, "tiny-teacher", concurrency=2, max_retries=0)
    prompts = [{"prompt_id": "a", "prompt": "refund my order"}, {"prompt_id": "b", "prompt": "where is my tracking"}]
    labels = label_responses(prompts, client, ResponseCache(tmp_path / "cache"), catalog_records())
    rows = labels.rows.to_pylist()
    assert labels.rows.num_rows + labels.quarantine.num_rows == 2  # tiny weights may answer nothing: quarantined
    assert all(row["prompt_tokens"] > 0 and row["model"] == "tiny-teacher" for row in rows)


def test_a_key_protected_server_refuses_a_wrong_key(tiny_model, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("SERVE_KEY", "right")
    monkeypatch.setenv("TEACHER_API_KEY", "wrong")
    with TeacherServer(tiny_model, api_key_env="SERVE_KEY") as running:
        with pytest.raises(ChatAPIFatalError, match="HTTP 401"):
            ChatClient(running.base_url, "tiny-teacher").complete(MESSAGES, max_tokens=2)
        monkeypatch.setenv("TEACHER_API_KEY", "right")
        assert ChatClient(running.base_url, "tiny-teacher").complete(MESSAGES, max_tokens=2).attempts == 1


def test_real_smollm2_answers_through_the_server(monkeypatch):
    """The builtin instruct model end to end; skipped when its converted copy is not cached yet, because the
    first conversion from GGUF takes 30-90 s (tests/test_models.py builds it)."""
    from mangadistill.core.models import cache_dir

    if not (Path(cache_dir()) / "models" / "smollm2-135m" / "config.json").exists():
        pytest.skip("smollm2-135m is not converted yet (first conversion 30-90 s; run tests/test_models.py)")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with TeacherServer(LocalChatModel("smollm2-135m", max_new_tokens=12)) as running:
        result = ChatClient(running.base_url, "smollm2-135m", timeout_s=60).complete(
            [{"role": "user", "content": "Name one famous pirate manga."}], max_tokens=12)
    assert result.content.strip() and 0 < result.completion_tokens <= 12 and result.prompt_tokens > 5
    assert time.monotonic() - started < REAL_MODEL_BUDGET_S


# --- failing closed and finishing: raw sockets against the real server ----------------------------------------


class StubModel:
    """A ChatGenerator without weights: answers "ok", or raises `error` when given one."""

    model = "stub"

    def __init__(self, error: Exception | None = None, delay_s: float = 0.0) -> None:
        self.error = error
        self.delay_s = delay_s

    def answer(self, messages, max_tokens, temperature, choices=None) -> Generation:
        time.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return Generation("ok", 3, 1, "stop")


CHAT_BODY = json.dumps({"model": "stub", "messages": MESSAGES}).encode()


def raw_exchange(server: TeacherServer, data: bytes, timeout_s: float = 10.0) -> tuple[int, dict, dict]:
    """Send `data` as is on a fresh connection; (status, headers, JSON body) of the answer."""
    host, port = server.httpd.server_address[:2]
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), json.loads(response.read())


def post_head(length: str | None, extra: str = "") -> bytes:
    header = "" if length is None else f"Content-Length: {length}\r\n"
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{header}{extra}"
            "\r\n").encode()


@pytest.fixture
def stub_server(monkeypatch) -> Iterator[TeacherServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with TeacherServer(StubModel(), socket_timeout_s=1.0) as running:
        yield running


@pytest.mark.parametrize(("value", "message"), [
    (None, "Content-Length header is required"),
    ("-1", "non-negative integer"),
    ("abc", "non-negative integer"),
    ("1e3", "non-negative integer"),
    (str(MAX_BODY_BYTES + 1), "over the limit"),
])
def test_a_bad_content_length_gets_400_with_a_json_error(stub_server, value, message):
    status, headers, body = raw_exchange(stub_server, post_head(value))
    assert status == 400 and message in body["error"]["message"] and headers["Connection"] == "close"


def test_two_content_lengths_or_a_chunked_body_get_400(stub_server):
    status, _, body = raw_exchange(stub_server, post_head("2", "Content-Length: 5\r\n") + b"{}")
    assert status == 400 and "exactly one Content-Length" in body["error"]["message"]
    status, _, body = raw_exchange(stub_server, post_head(None, "Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n")
    assert status == 400 and "Transfer-Encoding" in body["error"]["message"]


def test_a_short_body_gets_400_after_the_socket_timeout_and_frees_its_worker(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with TeacherServer(StubModel(), socket_timeout_s=1.0, max_workers=1) as running:
        started = time.monotonic()
        status, _, body = raw_exchange(running, post_head("500") + b'{"model": ')
        waited = time.monotonic() - started
        assert status == 400 and "shorter than its Content-Length of 500" in body["error"]["message"]
        assert 1.0 <= waited < 3.0
        status, _, body = raw_exchange(running, post_head(str(len(CHAT_BODY))) + CHAT_BODY)  # the only worker
        assert status == 200 and body["choices"][0]["message"]["content"] == "ok"


def test_a_model_exception_gets_500_with_a_json_error_and_the_server_keeps_serving(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with TeacherServer(StubModel(RuntimeError("CUDA out of memory")), socket_timeout_s=1.0) as running:
        response = requests.post(f"{running.base_url}/chat/completions", json={"messages": MESSAGES}, timeout=5)
        assert response.status_code == 500
        assert response.json()["error"] == {"message": "the model failed on this request (RuntimeError); see "
                                             "the server log", "type": "server_error"}
        client = ChatClient(running.base_url, "stub", max_retries=1, backoff_base_s=0.01)
        with pytest.raises(ChatCallFailed, match="HTTP 500"):
            client.complete(MESSAGES)
        running.generator.error = None
        assert client.complete(MESSAGES).content == "ok"


def test_workers_are_bounded_extra_connections_wait_then_get_503(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with TeacherServer(StubModel(), socket_timeout_s=5.0, max_workers=2, queue_timeout_s=0.5) as running:
        address = running.httpd.server_address[:2]
        idle = [socket.create_connection(address, timeout=5) for _ in range(2)]  # hold both workers
        try:
            started = time.monotonic()
            status, headers, body = raw_exchange(running, post_head(str(len(CHAT_BODY))) + CHAT_BODY)
            assert status == 503 and headers["Retry-After"] == "1" and body["error"]["type"] == "server_busy"
            assert time.monotonic() - started >= 0.5 and running.httpd.refused == 1
            threading.Timer(0.2, idle.pop().close).start()  # a worker frees up while the next one waits
            status, _, _ = raw_exchange(running, post_head(str(len(CHAT_BODY))) + CHAT_BODY)
            assert status == 200
        finally:
            for sock in idle:
                sock.close()


@pytest.mark.parametrize("value", [None, ""])
def test_a_server_whose_key_variable_is_unset_or_empty_refuses_to_start(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("SERVE_KEY", raising=False)
    else:
        monkeypatch.setenv("SERVE_KEY", value)
    with pytest.raises(ServerKeyMissing, match="SERVE_KEY"):
        TeacherServer(StubModel(), api_key_env="SERVE_KEY")


@pytest.mark.parametrize("value", [None, ""])
def test_serve_teacher_exits_2_before_loading_a_model_when_the_key_variable_is_unset(value):
    env = {name: v for name, v in os.environ.items() if name != "SERVE_KEY"}
    if value is not None:
        env["SERVE_KEY"] = value
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "mangadistill_pipelines.cli", "serve-teacher", "--api-key-env",
                           "SERVE_KEY", "--model", "no-such-model"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert "SERVE_KEY" in done.stderr and "unset or empty" in done.stderr
    assert time.monotonic() - started < 30


def test_the_key_is_compared_in_constant_time_and_an_emptied_variable_locks_everyone_out(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("SERVE_KEY", "right-key")
    compared = []
    real = teacher_server.hmac.compare_digest
    monkeypatch.setattr(teacher_server.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    with TeacherServer(StubModel(), api_key_env="SERVE_KEY", socket_timeout_s=1.0) as running:
        url = f"{running.base_url}/chat/completions"
        for token in ("right-kex", "right-key-and-more", ""):
            response = requests.post(url, json={"messages": MESSAGES}, headers={"Authorization": f"Bearer {token}"},
                                     timeout=5)
            assert response.status_code == 401
        ok = requests.post(url, json={"messages": MESSAGES}, headers={"Authorization": "Bearer right-key"}, timeout=5)
        assert ok.status_code == 200 and len(compared) == 4
        monkeypatch.setenv("SERVE_KEY", "")  # emptied after the start: nobody gets in, not everybody
        refused = requests.post(url, json={"messages": MESSAGES}, headers={"Authorization": "Bearer "}, timeout=5)
        assert refused.status_code == 401


def test_a_prompt_longer_than_the_context_gets_400_and_one_that_fits_is_answered(server, tiny_model):
    limit = tiny_model.max_new_tokens  # the server caps max_tokens at it
    room = tiny_model.context_tokens - limit

    def prompt_tokens(words: int) -> int:
        messages = [{"role": "user", "content": "refund " * words}]
        return len(tiny_model.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                            return_dict=True)["input_ids"])

    low, high = 1, room  # the most words that fit: prompt_tokens grows with words
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if prompt_tokens(middle) <= room else (low, middle - 1)
    words = low
    assert prompt_tokens(words) <= room < prompt_tokens(words + 1)
    url = f"{server.base_url}/chat/completions"
    for count, status in ((words + 1, 400), (words, 200)):
        response = requests.post(url, timeout=60, json={"messages": [{"role": "user", "content": "refund " * count}],
                                                        "max_tokens": 50, "temperature": 0})
        assert response.status_code == status, response.text
    assert "exceeds the model's context of 4096 tokens" in requests.post(url, timeout=60, json={
        "messages": [{"role": "user", "content": "refund " * (words + 1)}]}).json()["error"]["message"]
    with pytest.raises(ChatCallFailed, match="context"):  # in process, the labelling backend fails the row
        tiny_model.complete([{"role": "user", "content": "refund " * (words + 1)}])
