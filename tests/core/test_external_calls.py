"""Every external model call goes through ChatClient, which redacts first and refuses what it cannot redact.

Each caller (the response teacher's labelling, the intent adjudicator's `openai` backend, the response judge)
is driven over a hand-written PII corpus (pii_corpus.jsonl: formats chosen as customers write them, not from
the redactor's patterns or the sample generators) against a real local HTTP server that records every request
body. No corpus PII value the redactor covers may reach the server. What the redactor does not cover yet is
listed in KNOWN_GAPS: those cases xfail strictly, so the day one is fixed its test fails and asks to move it.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mangadistill.core import chat_api
from mangadistill.core.chat_api import ChatClient, PersonalDataRefused
from mangadistill.core.redaction import PII_KINDS, PLACEHOLDERS, Redaction, redact_text
from mangadistill.sample_data.catalog import catalog_records
from mangadistill.sample_data.responses import generate_production_prompts

CORPUS: list[dict[str, Any]] = [
    json.loads(line) for line in (Path(__file__).parent / "pii_corpus.jsonl").read_text("utf-8").splitlines()
    if line.strip()
]
KNOWN_GAPS: dict[str, str] = {}
"""Corpus ids the redactor is known to miss (id -> why), each xfailed strictly: none since the Presidio redactor
(issue 12); the 18 it replaced (spelled/bracketed emails, national phone numbers, dotted and mixed-separator
cards, non-US and suffix-less addresses, other order formats, names) are plain tests now."""
CALLERS = ("teacher", "adjudicator", "judge")


def test_the_corpus_is_well_formed_and_its_gaps_are_real():
    ids = [item["id"] for item in CORPUS]
    assert len(ids) == len(set(ids)) >= 25
    assert set(KNOWN_GAPS) <= set(ids)
    catalog = json.dumps(catalog_records(), ensure_ascii=False)  # what a labelling prompt adds around the text
    for item in CORPUS:
        assert item["pii"] and all(value in item["text"] for value in item["pii"]), item["id"]
        for value in item["pii"]:  # a value found at the server must come from its own item
            assert value not in catalog, (item["id"], value)
            assert not [other["id"] for other in CORPUS if other is not item and value in other["text"]], value


class RecordingServer:
    """A real chat-completions server that keeps every request body and answers `reply(request)`."""

    def __init__(self, reply: Callable[[dict[str, Any]], str]) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format, *args):
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with server.lock:
                    server.bodies.append(raw)
                body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                        "content": reply(json.loads(raw))},
                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def strings(self) -> list[str]:
        """Every string anywhere in every JSON body received (message contents, guided_choice, model, ...)."""
        found: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, str):
                found.append(value)
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        for raw in self.bodies:
            walk(json.loads(raw))
        return found

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _run_teacher(base_url: str, texts: list[str], folder: Path) -> ChatClient:
    from mangadistill.response.cache import ResponseCache
    from mangadistill.response.labeling import label_responses

    client = ChatClient(base_url, "teacher", max_retries=0)
    prompts = [{"prompt_id": f"p{i}", "prompt": text} for i, text in enumerate(texts)]
    label_responses(prompts, client, ResponseCache(folder / "cache"), catalog_records())
    return client


def _run_adjudicator(base_url: str, texts: list[str], folder: Path) -> ChatClient:
    from mangadistill.intent.adjudicator import OpenAIChatAdjudicator

    adjudicator = OpenAIChatAdjudicator(base_url, "adjudicator", max_retries=0)
    adjudicator.adjudicate(texts)
    return adjudicator.client


def _run_judge(base_url: str, texts: list[str], folder: Path) -> ChatClient:
    from mangadistill.response.gate.judge import judge_preference

    client = ChatClient(base_url, "judge", max_retries=0)
    judge_preference(client, [f"e{i}" for i in range(len(texts))], texts, texts, list(reversed(texts)))
    return client


REPLIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "teacher": lambda request: "Thanks for reaching out; I can help with that.",
    "adjudicator": lambda request: '{"intent": "faq", "confidence": 0.9, "secondary": null}',
    "judge": lambda request: '{"winner": "tie"}',
}
RUNS = {"teacher": _run_teacher, "adjudicator": _run_adjudicator, "judge": _run_judge}


@pytest.fixture(scope="module")
def sent(tmp_path_factory) -> Iterator[Callable[[str], tuple[list[str], ChatClient]]]:
    """sent(caller): (every string the server received from that caller over the corpus, the caller's client);
    each caller runs once per module."""
    runs: dict[str, tuple[list[str], ChatClient]] = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NO_PROXY", "127.0.0.1")
        env.setenv("no_proxy", "127.0.0.1")

        def run(caller: str) -> tuple[list[str], ChatClient]:
            if caller not in runs:
                server = RecordingServer(REPLIES[caller])
                try:
                    client = RUNS[caller](server.base_url, [item["text"] for item in CORPUS],
                                          tmp_path_factory.mktemp(caller))
                finally:
                    server.close()
                assert len(server.bodies) >= len(CORPUS), f"{caller} did not send every text"
                runs[caller] = (server.strings(), client)
            return runs[caller]

        yield run


def _cases() -> list[Any]:
    cases = []
    for caller in CALLERS:
        for item in CORPUS:
            marks = ([pytest.mark.xfail(strict=True, reason=f"redactor gap: {KNOWN_GAPS[item['id']]}")]
                     if item["id"] in KNOWN_GAPS else [])
            cases.append(pytest.param(caller, item, marks=marks, id=f"{caller}-{item['id']}"))
    return cases


@pytest.mark.parametrize(("caller", "item"), _cases())
def test_no_covered_personal_data_reaches_the_server(sent, caller, item):
    strings, _ = sent(caller)
    leaked = [value for value in item["pii"] if any(value in text for text in strings)]
    assert not leaked, f"{caller} sent {leaked} of {item['id']!r}"


@pytest.mark.parametrize("caller", CALLERS)
def test_each_caller_redacts_through_its_client_and_counts_it(sent, caller):
    strings, client = sent(caller)
    covered = Counter(item["kind"] for item in CORPUS if item["id"] not in KNOWN_GAPS and item["kind"] in PII_KINDS)
    assert set(client.redactions) == set(PII_KINDS)
    for kind, items in covered.items():
        assert client.redactions[kind] >= items, (kind, dict(client.redactions))
        assert any(PLACEHOLDERS[kind] in text for text in strings)
    assert client.usage.refused == 0


def test_text_still_holding_personal_data_after_redaction_is_refused_and_never_sent(monkeypatch):
    """A redactor that misses on the first pass (here: it replaces only the first email) is caught by the
    second pass: the request is refused, nothing reaches the server, the refusal names kinds, not text."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    real = redact_text

    def first_email_only(text: str) -> Redaction:
        match = re.search(r"\S+@\S+\.com", text)
        if match is None:
            return real(text)
        counts = dict.fromkeys(PII_KINDS, 0) | {"email": 1}
        return Redaction(text[: match.start()] + "[EMAIL]" + text[match.end():], counts)

    monkeypatch.setattr(chat_api, "redact_text", first_email_only)
    server = RecordingServer(REPLIES["teacher"])
    try:
        client = ChatClient(server.base_url, "teacher", max_retries=3)
        with pytest.raises(PersonalDataRefused, match="still contains email") as refusal:
            client.complete([{"role": "user", "content": "mail a.b@x.com or c.d@y.com"}], label="row 7")
        assert refusal.value.attempts == 0 and refusal.value.kinds == ["email"]
        assert "x.com" not in str(refusal.value) and "y.com" not in str(refusal.value)
        assert server.bodies == [] and client.usage.refused == 1 and client.usage.requests == 0
        assert client.complete([{"role": "user", "content": "just one: a.b@x.com"}]).attempts == 1
    finally:
        server.close()
    assert "a.b@x.com" not in " ".join(server.strings())


def test_content_parts_are_redacted_too_and_unknown_content_is_refused(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = RecordingServer(REPLIES["teacher"])
    try:
        client = ChatClient(server.base_url, "teacher", max_retries=0)
        client.complete([{"role": "user", "content": [{"type": "text", "text": "card 4111 1111 1111 1111"}]}])
        assert json.loads(server.bodies[0])["messages"][0]["content"] == [{"type": "text", "text": "card [CARD]"}]
        with pytest.raises(ValueError, match="text or a list of parts"):
            client.complete([{"role": "user", "content": {"text": "jane@example.com"}}])
        assert len(server.bodies) == 1
    finally:
        server.close()


def test_catalog_facts_reach_the_server_unchanged(monkeypatch):
    """SKUs, titles, volume numbers and prices are product facts: the client must not redact them."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    texts = [f"Is {r['sku']} ({r['title']}) vol {r['volumes']} still ${r['price_usd']:.2f}? "
             f"I have volumes 1-{r['volumes']} of {r['title']}." for r in catalog_records()[:40]]
    texts += ["Is MA-00001 in stock?", "One Piece vol 105 costs $11.99", "box set of 12 volumes for $143.88",
              "ISBN 978-1-4215-8109-7, released 2024-05-12", "card ending 4242 was charged $9.99"]
    server = RecordingServer(REPLIES["teacher"])
    try:
        client = ChatClient(server.base_url, "teacher", max_retries=0)
        for text in texts:
            client.complete([{"role": "user", "content": text}])
    finally:
        server.close()
    assert [json.loads(raw)["messages"][0]["content"] for raw in server.bodies] == texts
    assert sum(client.redactions.values()) == 0


def test_redaction_is_idempotent_on_redacted_text():
    """The second pass that guards every request must find nothing in what the first pass produced."""
    texts = [item["text"] for item in CORPUS] + [row["prompt"] for row in generate_production_prompts(800, seed=3)]
    texts.append(" ".join(PLACEHOLDERS.values()) + " order [ORDER], card [CARD], call [PHONE]")
    for text in texts:
        once = redact_text(text).text
        twice = redact_text(once)
        assert twice.text == once and not twice.kinds, text
