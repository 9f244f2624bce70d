"""`mangadistill review PACKET`: a local web page where a person reviews a blinded A/B packet, one pair at a time.

- GET /: the first pair of the packet this reviewer has not reviewed: the prompt and the two answers, which of
  the packet's answers is shown as A drawn at random per pair (once per session) and recorded; buttons and keys
  a (A better), b (B better), t (tie), x (both bad), n (write a note; Escape leaves it); "pair n of N". When
  every pair is reviewed: a page naming the output file and the command that gives it to the gate.
- POST /review (form: token, packet_id, choice a/b/tie/both_bad as shown, note): maps the shown choice back to
  the packet's A/B, appends one row to the JSONL output and flushes it to disk, then 303 to /. 400 for a bad
  body, an unknown packet_id, a bad choice or a note over MAX_NOTE_CHARS; 403 for a wrong token (a form posted
  from another web site); 409 for a pair this reviewer already reviewed.
- Output rows: COMPLETED_REVIEWS (packet_id, choice in the packet's terms, reviewer) plus note, shown_order
  ("ab": the packet's A shown as A; "ba": swapped) and reviewed_at (UTC, ISO 8601): `score_human_reviews`
  reads the file as it is (`mangadistill run response --param completed_reviews_uri=FILE`).
- Resume: rows already in the output file for this reviewer are skipped when the session starts.

Everything shown is HTML-escaped, the page's only script is allowed by its hash in the Content-Security-Policy,
and the server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import json
import logging
import os
import random
import secrets
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.response.contracts import REVIEW_CHOICES, REVIEW_PACKET

logger = logging.getLogger(__name__)

MAX_NOTE_CHARS = 2000
MAX_BODY_BYTES = 64 * 1024
DEFAULT_OUT_NAME = "completed_reviews.jsonl"
CHOICE_LABELS = {"a": ("A is better", "a"), "b": ("B is better", "b"), "tie": ("Tie", "t"),
                 "both_bad": ("Both bad", "x")}
"""Shown choice -> (button label, keyboard shortcut)."""
_SWAP = {"a": "b", "b": "a"}
_SCRIPT = """
document.addEventListener("keydown", function (event) {
  var note = document.getElementById("note");
  if (!note || event.ctrlKey || event.metaKey || event.altKey) { return; }
  if (event.target === note) { if (event.key === "Escape") { note.blur(); } return; }
  if (event.key === "n") { event.preventDefault(); note.focus(); return; }
  var button = document.querySelector('button[data-key="' + event.key.toLowerCase() + '"]');
  if (button) { event.preventDefault(); button.click(); }
});
"""
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
        f"script-src 'sha256-{base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()}'")
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem; padding: 0 1rem; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; border: 1px solid #bbb; border-radius: 6px;
        padding: .75rem; background: #fafafa; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
button { font-size: 1rem; padding: .5rem 1rem; margin: .25rem .5rem .25rem 0; }
kbd { border: 1px solid #999; border-radius: 3px; padding: 0 .3rem; font-size: .85rem; }
textarea { width: 100%; box-sizing: border-box; }
progress { width: 16rem; }
"""


class ReviewRejected(ValueError):
    """A review the session refuses: `status` is the HTTP status to answer with (400, 403 or 409)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def default_reviewer() -> str:
    """The login name from the environment ($LOGNAME, $USER, ...), else "anonymous"."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    return "anonymous"


def default_out(packet_uri: str) -> str:
    """DEFAULT_OUT_NAME beside a local packet; in the working folder for a remote (gs://) one."""
    return DEFAULT_OUT_NAME if "://" in packet_uri else str(Path(packet_uri).with_name(DEFAULT_OUT_NAME))


class ReviewSession:
    """One reviewer's pass over a REVIEW_PACKET, persisted to a local JSONL file as reviews are made.

    ValueError when the packet breaks its contract, the output is not a .jsonl path, the reviewer is blank, or
    the output already holds reviews of packet_ids that are not in this packet (another packet's file).
    Thread-safe. `rng` draws the shown order (tests pass a seeded one).
    """

    def __init__(self, packet_uri: str, out_path: str, reviewer: str, rng: random.Random | None = None) -> None:
        packet = validate_table(storage.read_table(packet_uri), REVIEW_PACKET, packet_uri, on_bad_rows="fail")
        self.pairs: dict[str, dict[str, str]] = {row["packet_id"]: row for row in packet.table.to_pylist()}
        self.out = Path(out_path).resolve()
        if self.out.suffix.lower() != ".jsonl":
            raise ValueError(f"review output {out_path}: must be a local .jsonl file (reviews are appended)")
        self.reviewer = reviewer.strip()
        if not self.reviewer:
            raise ValueError("reviewer name is blank")
        self.token = secrets.token_urlsafe(16)
        self._rng = rng or random.Random()
        self._swapped: dict[str, bool] = {}
        self._lock = threading.Lock()
        self.reviewed = self._reviewed_before()

    def _reviewed_before(self) -> set[str]:
        if not self.out.exists() or not self.out.read_text(encoding="utf-8").strip():
            return set()
        rows = storage.read_table(str(self.out)).to_pylist()
        foreign = [row.get("packet_id") for row in rows if row.get("packet_id") not in self.pairs]
        if foreign:
            raise ValueError(f"{self.out} holds reviews of {len(foreign)} packet_ids not in this packet (first "
                             f"{foreign[0]!r}): give another --out for this packet")
        return {row["packet_id"] for row in rows if row.get("reviewer") == self.reviewer}

    @property
    def total(self) -> int:
        return len(self.pairs)

    def next_pair(self) -> tuple[str, str, str, str] | None:
        """(packet_id, prompt, answer shown as A, answer shown as B) of the first pair not yet reviewed, or None."""
        with self._lock:
            packet_id = next((pid for pid in self.pairs if pid not in self.reviewed), None)
            if packet_id is None:
                return None
            swapped = self._swapped.setdefault(packet_id, self._rng.random() < 0.5)
        pair = self.pairs[packet_id]
        first, second = (pair["answer_b"], pair["answer_a"]) if swapped else (pair["answer_a"], pair["answer_b"])
        return packet_id, pair["prompt"], first, second

    def record(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Check a submitted form (token, packet_id, choice as shown, note) and append its row; the row written.

        ReviewRejected(403) for a wrong token, (400) for an unknown packet_id, a choice outside REVIEW_CHOICES or
        a note over MAX_NOTE_CHARS, (409) for a pair not shown in this session or already reviewed.
        """
        if not secrets.compare_digest(form.get("token", ""), self.token):
            raise ReviewRejected(403, "wrong or missing form token: reload the review page")
        packet_id, shown, note = form.get("packet_id", ""), form.get("choice", ""), form.get("note", "").strip()
        if packet_id not in self.pairs:
            raise ReviewRejected(400, f"unknown packet_id {packet_id[:40]!r}")
        if shown not in REVIEW_CHOICES:
            raise ReviewRejected(400, f"bad choice {shown[:40]!r}: expected one of {', '.join(REVIEW_CHOICES)}")
        if len(note) > MAX_NOTE_CHARS:
            raise ReviewRejected(400, f"note too long: {len(note)} characters, at most {MAX_NOTE_CHARS}")
        with self._lock:
            if packet_id in self.reviewed:
                raise ReviewRejected(409, f"{packet_id} is already reviewed by {self.reviewer}")
            if packet_id not in self._swapped:
                raise ReviewRejected(409, f"{packet_id} was not shown in this session: reload the review page")
            swapped = self._swapped[packet_id]
            row = {"packet_id": packet_id, "choice": _SWAP.get(shown, shown) if swapped else shown,
                   "reviewer": self.reviewer, "note": note or None, "shown_order": "ba" if swapped else "ab",
                   "reviewed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
            self.out.parent.mkdir(parents=True, exist_ok=True)
            with self.out.open("a", encoding="utf-8") as sink:
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
            self.reviewed.add(packet_id)
        return row


def _page(title: str, body: str) -> bytes:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{body}<script>{_SCRIPT}</script></body></html>").encode()


def _progress(session: ReviewSession) -> str:
    done, total = len(session.reviewed), session.total
    return (f'<p id="progress">Pair {min(done + 1, total)} of {total} &middot; {done} reviewed '
            f'<progress value="{done}" max="{total}"></progress></p>')


def render_pair(session: ReviewSession, pair: tuple[str, str, str, str]) -> bytes:
    """The review page for one pair; every text from the packet is escaped."""
    packet_id, prompt, first, second = (html.escape(text) for text in pair)
    buttons = "".join(f'<button type="submit" name="choice" value="{choice}" id="choose-{choice}" '
                      f'data-key="{key}">{label} <kbd>{key}</kbd></button>'
                      for choice, (label, key) in CHOICE_LABELS.items())
    body = (f"<h1>Blinded review</h1>{_progress(session)}"
            f"<p>Which answer serves the customer better? Reviewer: <b>{html.escape(session.reviewer)}</b>. "
            "The answers come from two models in random order.</p>"
            f'<h2>Prompt</h2><div class="text" id="prompt">{prompt}</div>'
            f'<div class="pair"><div><h2>Answer A</h2><div class="text" id="answer-a">{first}</div></div>'
            f'<div><h2>Answer B</h2><div class="text" id="answer-b">{second}</div></div></div>'
            f'<form method="post" action="/review"><input type="hidden" name="token" value="{session.token}">'
            f'<input type="hidden" name="packet_id" value="{packet_id}">'
            f'<p><label for="note">Note (optional, <kbd>n</kbd>; <kbd>Esc</kbd> to leave)</label><br>'
            f'<textarea id="note" name="note" rows="3" maxlength="{MAX_NOTE_CHARS}"></textarea></p>'
            f"<p>{buttons}</p></form>")
    return _page(f"Review {session.total - len(session.reviewed)} left", body)


def render_done(session: ReviewSession) -> bytes:
    """The page once every pair is reviewed: where the reviews are and how the gate reads them."""
    out = html.escape(str(session.out))
    body = (f"<h1>All {session.total} pairs reviewed</h1>{_progress(session)}"
            f'<p id="done">Completed reviews by <b>{html.escape(session.reviewer)}</b> are in <code>{out}</code>. '
            f"Give them to the gate: <code>mangadistill run response --param completed_reviews_uri={out}</code>"
            "</p><p>You can close this page and stop the server (Ctrl-C).</p>")
    return _page("Review complete", body)


class _ReviewHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], session: ReviewSession) -> None:
        super().__init__(address, _ReviewHandler)
        self.session = session


class _ReviewHandler(BaseHTTPRequestHandler):
    server: _ReviewHTTPServer
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8",
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": content_type, "Content-Length": str(len(body)),
                            "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
                            "Cache-Control": "no-store", **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, f"{status}: {message}\n".encode(), "text/plain; charset=utf-8")

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/":
            self._error(404, "not found: the review page is /")
            return
        session = self.server.session
        pair = session.next_pair()
        self._send(200, render_pair(session, pair) if pair else render_done(session))

    def do_POST(self) -> None:
        if self.path != "/review":
            self._error(404, "not found: reviews are posted to /review")
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(400, f"a Content-Length of at most {MAX_BODY_BYTES} bytes is required")
            return
        try:
            fields = parse_qs(self.rfile.read(int(length)).decode("utf-8"))
            form = {name: values[0] for name, values in fields.items() if len(values) == 1}
            self.server.session.record(form)
        except UnicodeDecodeError:
            self._error(400, "the form is not UTF-8")
        except ReviewRejected as rejected:
            self._error(rejected.status, str(rejected))
        except OSError as error:
            self._error(500, f"could not save the review: {error}")
        else:
            self._send(303, b"", headers={"Location": "/"})


class ReviewServer:
    """The review page for `session` on host:port (port 0: a free one) in a background thread; a context manager."""

    def __init__(self, session: ReviewSession, host: str = "127.0.0.1", port: int = 0) -> None:
        self.session = session
        self._httpd = _ReviewHTTPServer((host, port), session)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="review-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> ReviewServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> ReviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(packet_uri: str, out_path: str, reviewer: str, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the review page until interrupted (Ctrl-C), printing its address and, at the end, the progress."""
    session = ReviewSession(packet_uri, out_path, reviewer)
    server = ReviewServer(session, host, port).start()
    print(f"reviewing {session.total} pairs as {session.reviewer} ({len(session.reviewed)} already reviewed); "
          f"open {server.url} (Ctrl-C to stop); reviews go to {session.out}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    print(f"{len(session.reviewed)} of {session.total} pairs reviewed; resume with the same command. When all are "
          f"done: mangadistill run response --param completed_reviews_uri={session.out}")
