"""A content-addressed cache of teacher answers, on local disk or under a gs:// prefix.

key = sha256 of the canonical JSON (sorted keys, no spaces, UTF-8) of
{"model", "prompt_version", "messages" (the rendered chat messages), "params" (generation parameters)},
so any change to the teacher, the prompt files, the retrieved records, the customer text or the decoding
settings is a different key, and the same request is never paid for twice.

Layout: one file per key, `{root}/v1/{key[:2]}/{key}.json`, holding the answer, its usage and cost.

Why one file per key and not an append-only JSONL shard per writer: a GCS object cannot be appended to, so a
shard there must either be rewritten on every answer (quadratic) or buffered (a kill loses the buffer and the
rerun pays again). One object per key is durable the moment `put` returns, and atomic on both backends: GCS
publishes an object only when its upload completes, and locally the entry is written to a temporary file in
the same folder, fsynced, then renamed over the final name (rename is atomic on POSIX). A write killed
half-way leaves at most a `*.tmp-*` file that readers never look at, never a torn entry. The price is one
small file per answer (25,000 at the mixture's full scale) and, on gs://, one GET per cache hit; the key set is
listed once when the cache opens, so a miss costs no request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mangadistill.core import storage

logger = logging.getLogger(__name__)

LAYOUT_VERSION = "v1"
_SUFFIX = ".json"
COUNT_FIELDS = ("prompt_tokens", "completion_tokens")
AMOUNT_FIELDS = ("cost_usd", "latency_s")


def cache_key(model: str, prompt_version: str, messages: Sequence[dict[str, str]], params: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of the request (see the module docstring)."""
    request = {"model": model, "prompt_version": prompt_version, "messages": list(messages), "params": params}
    canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def entry_problem(entry: object, key: str) -> str | None:
    """Why `entry` cannot be used as the answer for `key`, or None. A usable entry is a JSON object with that
    "key", a "content" with something besides whitespace, a text "model" if any, whole token counts >= 0
    (COUNT_FIELDS) and finite amounts >= 0 (AMOUNT_FIELDS); booleans and numbers written as strings are not
    numbers."""
    if not isinstance(entry, dict):
        return f"not a JSON object but {type(entry).__name__}"
    if entry.get("key") != key:
        return f"holds the answer for another key ({entry.get('key')!r})"
    content = entry.get("content")
    if not isinstance(content, str) or not content.strip():
        return f"no answer text (content {content!r})"
    if not isinstance(entry.get("model", ""), str):
        return f"model is {entry['model']!r}, not a name"
    for name in COUNT_FIELDS + AMOUNT_FIELDS:
        if name not in entry:
            return f"no {name}"
        value, kinds = entry[name], (int,) if name in COUNT_FIELDS else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value < 0:
            return f"{name} is {value!r}, not a {'whole' if name in COUNT_FIELDS else 'finite'} number >= 0"
    return None


class ResponseCache:
    """Entries are JSON objects (see `entry_problem`); `get` returns None for a miss.

    An entry that cannot be used (unreadable, not JSON, another key inside, no answer text, a missing or bad
    token count, cost or latency) is logged, counted in `rejected`, and treated as a miss, so it is asked for
    again and replaced; it is never returned.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root).rstrip("/")
        self.gcs = storage.is_gcs(self.root)
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self.rejected = 0
        """Entries found but refused by `get` since this cache was opened."""
        if self.gcs:
            self._known = {
                uri.rsplit("/", 1)[1].removesuffix(_SUFFIX)
                for uri in storage.list_uris(self._join(LAYOUT_VERSION))
                if uri.endswith(_SUFFIX)
            }

    def _join(self, *parts: str) -> str:
        return "/".join([self.root, *parts]) if self.gcs else str(Path(self.root, *parts))

    def path(self, key: str) -> str:
        """Where the entry of `key` lives."""
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"not a sha256 hex cache key: {key!r}")
        return self._join(LAYOUT_VERSION, key[:2], key + _SUFFIX)

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry stored under `key`, or None."""
        uri = self.path(key)
        if self.gcs:
            with self._lock:
                if key not in self._known:
                    return None
        elif not Path(uri).is_file():
            return None
        try:
            entry = json.loads(storage.read_bytes(uri))
        except storage.ObjectNotFoundError:
            return None
        except (ValueError, storage.StorageError) as error:
            problem: str | None = f"unreadable ({error})"
        else:
            problem = entry_problem(entry, key)
        if problem is None:
            return entry
        with self._lock:
            self.rejected += 1
        logger.warning("cache entry %s is refused: %s; treating it as a miss", uri, problem)
        return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Store `entry` (plus "key") under `key`, atomically and durably before returning."""
        uri = self.path(key)
        data = json.dumps({**entry, "key": key}, ensure_ascii=False, sort_keys=True).encode("utf-8")
        if self.gcs:
            storage.write_bytes(uri, data)
            with self._lock:
                self._known.add(key)
            return
        final = Path(uri)
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_name(f"{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        directory = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)

    def stored_keys(self) -> set[str]:
        """Every key with an entry file (entries are not opened)."""
        if self.gcs:
            with self._lock:
                return set(self._known)
        root = Path(self.root, LAYOUT_VERSION)
        return {path.name.removesuffix(_SUFFIX) for path in root.glob(f"??/*{_SUFFIX}")} if root.is_dir() else set()

    def __len__(self) -> int:
        return len(self.stored_keys())
