"""serve-teacher: a local causal LM behind the OpenAI-compatible HTTP API, used through ChatClient."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama

from mangadistill.core.chat_api import ChatAPIFatalError, ChatClient
from mangadistill.core.teacher_server import LocalChatModel, TeacherServer
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


def test_guided_choice_answers_the_most_likely_choice_whatever_the_order(server, tiny_model):
    greedy = tiny_model.generate(MESSAGES, max_tokens=2, temperature=0.0)
    greedy_text = tiny_model.tokenizer.decode(
        tiny_model.tokenizer.encode(greedy.content, add_special_tokens=False)[:2])  # round-trips to its tokens
    others = [text for text in RESPONSES[:3] if text != greedy_text]
    client = ChatClient(server.base_url, "tiny-teacher", max_retries=0)
    for choices in ([greedy_text, *others], [*reversed(others), greedy_text]):
        result = client.complete(MESSAGES, guided_choice=choices)
        assert result.content == greedy_text and result.finish_reason == "stop"
    assert result.completion_tokens == len(tiny_model.tokenizer.encode(greedy_text, add_special_tokens=False))
    assert tiny_model.complete(MESSAGES, guided_choice=others).content in others


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
