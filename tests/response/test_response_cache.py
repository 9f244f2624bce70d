"""The content-addressed response cache: keys, atomic entries, gs://, and a labelling run killed half-way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import FakeChatServer

from mangadistill.core.chat_api import ChatClient
from mangadistill.response.cache import ResponseCache, cache_key
from mangadistill.response.labeling import label_responses
from mangadistill.sample_data.catalog import catalog_records

MESSAGES = [{"role": "system", "content": "rules"}, {"role": "user", "content": "is volume 3 out?"}]
PARAMS = {"temperature": 0.0, "max_tokens": 64}
KILL_PROMPTS = [{"prompt_id": f"p{i:02d}", "prompt": f"question {i} about One Piece volume {i}"} for i in range(30)]
ENTRY = {"content": "Volume 3 is out.", "model": "m", "prompt_tokens": 12, "completion_tokens": 5, "cost_usd": 0.001,
         "latency_s": 0.2}
BAD_FIELDS = {  # what a damaged or hand-edited entry may hold; each must be a miss, never a crash or a row
    "prompt_tokens as text": {"prompt_tokens": "abc"},
    "prompt_tokens as a fraction": {"prompt_tokens": 1.5},
    "completion_tokens as a boolean": {"completion_tokens": True},
    "negative cost": {"cost_usd": -0.5},
    "cost as the text NaN": {"cost_usd": "NaN"},
    "cost as a NaN literal": {"cost_usd": float("nan")},
    "infinite latency": {"latency_s": float("inf")},
    "empty answer": {"content": ""},
    "whitespace answer": {"content": " \n\t "},
    "answer not text": {"content": ["Volume 3 is out."]},
    "model not text": {"model": 5},
}
MISSING = ("content", "prompt_tokens", "completion_tokens", "cost_usd", "latency_s")


def test_key_changes_with_every_part_of_the_request_and_nothing_else():
    key = cache_key("m", "v1", MESSAGES, PARAMS)
    assert len(key) == 64
    assert key == cache_key("m", "v1", [dict(reversed(m.items())) for m in MESSAGES], dict(reversed(PARAMS.items())))
    changed = [
        cache_key("m2", "v1", MESSAGES, PARAMS),
        cache_key("m", "v2", MESSAGES, PARAMS),
        cache_key("m", "v1", [MESSAGES[0], {"role": "user", "content": "is volume 4 out?"}], PARAMS),
        cache_key("m", "v1", MESSAGES, {**PARAMS, "temperature": 0.7}),
        cache_key("m", "v1", MESSAGES, {**PARAMS, "max_tokens": 65}),
    ]
    assert len({key, *changed}) == 6


def test_entries_round_trip_and_a_torn_write_is_never_read(tmp_path, caplog):
    cache = ResponseCache(tmp_path)
    key, other = cache_key("m", "v", MESSAGES, PARAMS), cache_key("m", "v", MESSAGES, {"max_tokens": 1})
    assert cache.get(key) is None
    cache.put(key, ENTRY)
    assert cache.get(key) == {**ENTRY, "key": key}
    assert ResponseCache(tmp_path).get(key)["content"] == "Volume 3 is out."  # durable across instances
    final = Path(cache.path(other))
    final.parent.mkdir(parents=True, exist_ok=True)
    torn = final.with_name(final.name + ".tmp-123-abcd")
    torn.write_text('{"content": "half')  # what a write killed mid-way leaves
    assert cache.get(other) is None and cache.stored_keys() == {key}
    final.write_text('{"content": "trunc')  # a damaged entry (not possible through put): a logged miss
    assert cache.get(other) is None and "unreadable" in caplog.text
    final.write_text(json.dumps({**ENTRY, "key": key, "content": "someone else's"}))
    assert cache.get(other) is None
    assert cache.rejected == 2
    cache.put(other, {**ENTRY, "content": "fresh"})
    assert cache.get(other)["content"] == "fresh"
    assert list(final.parent.glob("*.tmp-*")) == [torn]  # put leaves no temporary file of its own


@pytest.mark.parametrize("damage", [*BAD_FIELDS, *(f"no {name}" for name in MISSING), "not JSON", "a JSON list"])
def test_an_entry_with_a_bad_field_is_a_logged_and_counted_miss(tmp_path, caplog, damage):
    cache = ResponseCache(tmp_path)
    key = cache_key("m", "v", MESSAGES, PARAMS)
    cache.put(key, ENTRY)
    entry = {**ENTRY, "key": key, **BAD_FIELDS.get(damage, {})}
    entry.pop(damage.removeprefix("no "), None)
    text = {"not JSON": '{"content": "Volume 3', "a JSON list": json.dumps([entry])}.get(damage, json.dumps(entry))
    Path(cache.path(key)).write_text(text)
    assert cache.get(key) is None and cache.rejected == 1
    assert "is refused" in caplog.text and "treating it as a miss" in caplog.text


def test_labelling_asks_again_for_every_bad_entry_and_counts_them(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    server = FakeChatServer()
    prompts = KILL_PROMPTS[: len(BAD_FIELDS)]
    try:
        client = ChatClient(server.base_url, "fake-teacher", max_retries=0)
        cache = ResponseCache(tmp_path / "cache")
        first = label_responses(prompts, client, cache, catalog_records())
        for key, damage in zip(first.rows.column("cache_key").to_pylist(), BAD_FIELDS.values(), strict=True):
            entry = json.loads(Path(cache.path(key)).read_text())
            Path(cache.path(key)).write_text(json.dumps({**entry, **damage}))
        asked = len(server.requests)
        again = label_responses(prompts, client, ResponseCache(tmp_path / "cache"), catalog_records())
        assert len(server.requests) - asked == len(prompts)  # every damaged entry is asked again, no crash
        assert again.metrics["cache_rejected"] == len(prompts) and again.metrics["cache_hits"] == 0
        assert again.rows.column("response").to_pylist() == first.rows.column("response").to_pylist()
        assert again.rows.column("cost_usd").to_pylist() == first.rows.column("cost_usd").to_pylist()
        warm = label_responses(prompts, client, ResponseCache(tmp_path / "cache"), catalog_records())
        assert warm.metrics["cache_hits"] == len(prompts) and warm.metrics["cache_rejected"] == 0
    finally:
        server.close()


def test_bad_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        ResponseCache(tmp_path).get("../../etc/passwd")


@pytest.mark.gcs
def test_gcs_cache_lists_once_and_survives_a_new_instance(gcs_bucket):
    root = f"gs://{gcs_bucket}/labelling/cache"
    key = cache_key("m", "v", MESSAGES, PARAMS)
    cache = ResponseCache(root)
    assert cache.get(key) is None
    cache.put(key, {**ENTRY, "content": "hello"})
    reopened = ResponseCache(root)
    assert reopened.stored_keys() == {key} and reopened.get(key)["content"] == "hello"


LABEL_SCRIPT = """
import json, sys
from mangadistill.core.chat_api import ChatClient
from mangadistill.response.cache import ResponseCache
from mangadistill.response.labeling import label_responses
from mangadistill.sample_data.catalog import catalog_records
base_url, cache_dir, prompts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = ChatClient(base_url, "fake-teacher", concurrency=2, max_retries=0)
label_responses(prompts, client, ResponseCache(cache_dir), catalog_records())
"""


def test_a_run_killed_mid_labelling_resumes_without_paying_twice_or_losing_a_row(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    server = FakeChatServer(latency_s=0.15)
    cache_dir = tmp_path / "cache"
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", LABEL_SCRIPT, server.base_url, str(cache_dir), json.dumps(KILL_PROMPTS)],
            env={**os.environ, "TQDM_DISABLE": "1"},
        )
        deadline = time.monotonic() + 60
        while len(ResponseCache(cache_dir)) < 8 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.kill()
        process.wait()
        finished = {ResponseCache(cache_dir).get(key)["content"].removeprefix("answer: ")
                    for key in ResponseCache(cache_dir).stored_keys()}
        assert 8 <= len(finished) < len(KILL_PROMPTS), "the kill should land in the middle of the run"
        asked_before = len(server.requests)

        client = ChatClient(server.base_url, "fake-teacher", concurrency=4, max_retries=0)
        resumed = label_responses(KILL_PROMPTS, client, ResponseCache(cache_dir), catalog_records())
        asked_on_resume = [call["text"] for call in server.requests[asked_before:]]
        assert not set(asked_on_resume) & finished  # zero repeated calls for rows finished before the kill
        assert sorted(asked_on_resume) == sorted(p["prompt"] for p in KILL_PROMPTS if p["prompt"] not in finished)
        assert resumed.rows.column("prompt_id").to_pylist() == [p["prompt_id"] for p in KILL_PROMPTS]
        assert resumed.quarantine.num_rows == 0
        assert resumed.metrics["cache_hits"] == len(finished)
        assert resumed.rows.column("response").to_pylist() == [f"answer: {p['prompt']}" for p in KILL_PROMPTS]

        asked = len(server.requests)
        warm = label_responses(KILL_PROMPTS, client, ResponseCache(cache_dir), catalog_records())
        assert len(server.requests) == asked and warm.metrics["teacher_calls"] == 0
        assert warm.metrics["cache_hits"] == len(KILL_PROMPTS)
    finally:
        server.close()
