"""Split rows into shards by a stable hash of their key, and check that the shards' results account for every
row exactly once.

A key always lands in the same shard for the same shard count (sha256, not Python's salted `hash`), so a
rerun or a retried shard task sees the same rows, and rows that share a key share a shard. Used by the sharded
teacher labelling (response wing): the split step partitions the prompts, N tasks label one shard each, and the
merge step calls `check_shard_accounting` before it concatenates anything.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

MAX_NAMED_IDS = 20
"""At most this many ids are named in a ShardAccountingError message (the attributes hold them all)."""


def shard_of(key: str, shards: int) -> int:
    """The shard (0 <= shard < shards) of `key`: the first 8 bytes of sha256(key) modulo `shards`."""
    if shards < 1:
        raise ValueError(f"need at least 1 shard, got {shards}")
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % shards


def split_positions(keys: Sequence[str], shards: int) -> list[list[int]]:
    """Row positions per shard (`shard_of` each key), each list in input order; some may be empty."""
    positions: list[list[int]] = [[] for _ in range(max(shards, 1))]
    for position, key in enumerate(keys):
        positions[shard_of(key, shards)].append(position)
    return positions


def _named(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:MAX_NAMED_IDS])
    return shown + (f" and {len(ids) - MAX_NAMED_IDS} more" if len(ids) > MAX_NAMED_IDS else "")


class ShardAccountingError(ValueError):
    """Shard results that lose, double or invent rows; `lost`, `doubled` and `unexpected` hold the ids."""

    def __init__(self, what: str, lost: list[str], doubled: list[str], unexpected: list[str]) -> None:
        self.lost, self.doubled, self.unexpected = lost, doubled, unexpected
        problems = []
        if lost:
            problems.append(f"{len(lost)} {what}(s) lost (in no shard's output): {_named(lost)}")
        if doubled:
            problems.append(f"{len(doubled)} {what}(s) doubled (more than once in the outputs): {_named(doubled)}")
        if unexpected:
            problems.append(f"{len(unexpected)} {what}(s) returned that no shard was given: "
                            f"{_named(unexpected)}")
        super().__init__("; ".join(problems))


def check_shard_accounting(expected: Sequence[str], returned: Sequence[str], what: str = "row") -> None:
    """Raise ShardAccountingError unless every id in `expected` (the ids the split handed out, unique) is in
    `returned` (every id the shards gave back, answered or refused, in any order) exactly once, and nothing
    else is. The error names the lost, doubled and unexpected ids, sorted. Order-free on purpose: KFP does
    not promise the order of a `dsl.Collected` list.
    """
    counts = Counter(returned)
    doubled = sorted(i for i, n in counts.items() if n > 1)
    lost = sorted(set(expected) - counts.keys())
    unexpected = sorted(counts.keys() - set(expected))
    if lost or doubled or unexpected:
        raise ShardAccountingError(what, lost, doubled, unexpected)
