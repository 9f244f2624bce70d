"""Blinded human review: an A/B packet per eval row (student vs base student) with its unblinding key kept
apart, and completed reviews scored into the human win rate."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mangadistill.core import storage
from mangadistill.core.contracts import quarantine_table, validate_table
from mangadistill.response.contracts import COMPLETED_REVIEWS, REVIEW_CHOICES, REVIEW_KEY, REVIEW_PACKET

REVIEW_MODELS = ("student", "base_student")
WIN_RATE_Z = 1.959964
"""z of the two-sided 95% interval around the human win rate."""


def build_review_packet(
    eval_rows: Sequence[Mapping[str, Any]], student_answers: Sequence[str], base_answers: Sequence[str],
    seed: int = 0,
) -> tuple[pa.Table, pa.Table]:
    """(REVIEW_PACKET, REVIEW_KEY): one blinded pair per eval row, student vs base student.

    A seeded RNG (random.Random(f"review-packet:{seed}")) decides for each row whether the student is A,
    draws an opaque packet_id ("pk-" + 12 hex digits, not derived from the eval_id) and shuffles the rows, so
    neither position, id nor order tells a reviewer which model wrote an answer. Same inputs, same packet.
    """
    if not (len(eval_rows) == len(student_answers) == len(base_answers)) or not eval_rows:
        raise ValueError("build_review_packet: need one student and one base answer per eval row, at least one")
    rng = random.Random(f"review-packet:{seed}")
    packet, key, used = [], [], set()
    for row, student, base in zip(eval_rows, student_answers, base_answers, strict=True):
        packet_id = f"pk-{rng.getrandbits(48):012x}"
        while packet_id in used:
            packet_id = f"pk-{rng.getrandbits(48):012x}"
        used.add(packet_id)
        student_first = rng.random() < 0.5
        a, b = (student, base) if student_first else (base, student)
        packet.append({"packet_id": packet_id, "prompt": row["prompt"], "answer_a": a, "answer_b": b})
        model_a, model_b = REVIEW_MODELS if student_first else REVIEW_MODELS[::-1]
        key.append({"packet_id": packet_id, "eval_id": row["eval_id"], "slice": row["slice"],
                    "model_a": model_a, "model_b": model_b})
    order = list(range(len(packet)))
    rng.shuffle(order)
    return (pa.Table.from_pylist([packet[i] for i in order], schema=REVIEW_PACKET),
            pa.Table.from_pylist([key[i] for i in order], schema=REVIEW_KEY))


@dataclass(frozen=True)
class HumanReviewResult:
    """Completed reviews scored against the unblinding key. win_rate and its 95% interval (win_rate_low,
    win_rate_high) are None until every packet has a valid review; `status` says why ("awaiting human review:
    ...") or starts with "complete" and gives the win rate, its interval and the number of reviews."""

    win_rate: float | None
    status: str
    packets: int
    reviews: int = 0
    reviewed_packets: int = 0
    student_wins: int = 0
    base_wins: int = 0
    ties: int = 0
    both_bad: int = 0
    win_rate_low: float | None = None
    win_rate_high: float | None = None
    win_rate_by_slice: dict[str, float] = field(default_factory=dict)
    quarantine: pa.Table = field(default_factory=lambda: quarantine_table([]))


def wilson_interval(rate: float, n: int, z: float = WIN_RATE_Z) -> tuple[float, float]:
    """Wilson score interval (low, high) around a rate observed over n > 0 trials; stays inside [0, 1]."""
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def score_human_reviews(reviews_uri: str, key: pa.Table) -> HumanReviewResult:
    """Read completed reviews (COMPLETED_REVIEWS: packet_id, choice a/b/tie/both_bad, optional reviewer; other
    columns such as the review page's note are ignored) and unblind.

    Empty `reviews_uri`: awaiting review. Rows with an unknown packet_id, a choice outside REVIEW_CHOICES or a
    repeated (packet_id, reviewer) go to the quarantine with the reason; more than 20% bad rows raise
    DataContractError naming the file, column and first bad row. Packets without a valid review keep the
    metric missing. win_rate = (student wins + (ties + both bad) / 2) / valid reviews, overall and per slice
    (both bad prefers neither model, like a tie); its 95% interval is the Wilson score interval over the
    valid reviews.
    """
    packets = key.num_rows
    if not reviews_uri:
        return HumanReviewResult(None, "awaiting human review: no completed reviews were given", packets)
    raw = storage.read_table(reviews_uri)
    if "reviewer" not in raw.column_names:
        raw = raw.append_column("reviewer", pa.nulls(raw.num_rows, pa.string()))
    by_packet = {row["packet_id"]: row for row in key.to_pylist()}

    def choice_check(value: object) -> str | None:
        ok = str(value).strip().lower() in REVIEW_CHOICES
        return None if ok else f"bad choice {value!r}: expected one of {', '.join(REVIEW_CHOICES)}"

    def packet_check(value: object) -> str | None:
        return None if value in by_packet else "unknown packet_id: not in the review key"

    validated = validate_table(raw, COMPLETED_REVIEWS, reviews_uri,
                               extra_checks=[("packet_id", packet_check), ("choice", choice_check)])
    votes: Counter[str] = Counter()
    by_slice: dict[str, list[float]] = {}
    reviewed = set()
    for row in validated.table.to_pylist():
        entry = by_packet[row["packet_id"]]
        reviewed.add(row["packet_id"])
        choice = row["choice"].strip().lower()
        winner = choice if choice in ("tie", "both_bad") else entry[f"model_{choice}"]
        votes[winner] += 1
        by_slice.setdefault(entry["slice"], []).append({"student": 1.0, "base_student": 0.0}.get(winner, 0.5))
    reviews = sum(votes.values())
    missing = [packet_id for packet_id in by_packet if packet_id not in reviewed]
    counts = dict(packets=packets, reviews=reviews, reviewed_packets=len(reviewed), student_wins=votes["student"],
                  base_wins=votes["base_student"], ties=votes["tie"], both_bad=votes["both_bad"],
                  quarantine=validated.quarantine)
    if missing:
        status = (f"awaiting human review: {len(missing)} of {packets} packets have no valid completed review "
                  f"(first {missing[0]}; {validated.quarantine.num_rows} review rows quarantined)")
        return HumanReviewResult(None, status, **counts)
    win_rate = (votes["student"] + 0.5 * (votes["tie"] + votes["both_bad"])) / reviews
    low, high = wilson_interval(win_rate, reviews)
    status = (f"complete: win rate {win_rate:.3f} (95% interval {low:.3f}-{high:.3f}) from {reviews} reviews of "
              f"{packets} packets ({votes['student']} student, {votes['base_student']} base student, "
              f"{votes['tie']} tie, {votes['both_bad']} both bad)")
    per_slice = {name: float(np.mean(scores)) for name, scores in by_slice.items()}
    return HumanReviewResult(win_rate, status, win_rate_low=low, win_rate_high=high, win_rate_by_slice=per_slice,
                             **counts)
