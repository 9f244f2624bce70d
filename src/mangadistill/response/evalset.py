"""The packaged hand-written response evaluation set (resources/response_eval_handwritten.jsonl, described in
resources/HANDWRITTEN_RESPONSE.md): 72 prompts a person wrote, 18 per slice, with reviewed reference answers.

It is evaluation data only: never trained on and never used to choose defaults. The demo hands it to the
pipeline as its `eval_uri`; a store passes its own RESPONSE_EVAL file instead."""

from __future__ import annotations

import pyarrow as pa

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.response.contracts import RESPONSE_EVAL, RESPONSE_EVAL_SLICES

HANDWRITTEN_EVAL_FILE = "response_eval_handwritten.jsonl"


def _bad_line(source: str, line: int, problem: str) -> ValueError:
    return ValueError(f"{source}: line {line}: {problem}")


def handwritten_eval_set(per_slice: int | None = None) -> pa.Table:
    """The packaged set as a RESPONSE_EVAL table (its extra `bad_response` column, kept for the slice-check
    tests, dropped); with `per_slice`, only the first `per_slice` rows of each slice in file order. A bad row
    fails (the packaged file is versioned, so a bad row is a packaging bug, not data to quarantine)."""
    if per_slice is not None and per_slice < 1:
        raise ValueError(f"per_slice must be at least 1, got {per_slice}")
    source, entries = storage.jsonl_entries("", HANDWRITTEN_EVAL_FILE, _bad_line)
    rows = [{name: entry.get(name) for name in RESPONSE_EVAL.names} for _, entry in entries]
    if per_slice is not None:
        taken = dict.fromkeys(RESPONSE_EVAL_SLICES, 0)
        kept = []
        for row in rows:
            if taken.get(row["slice"], 0) < per_slice:
                taken[row["slice"]] = taken.get(row["slice"], 0) + 1
                kept.append(row)
        rows = kept
    table = pa.Table.from_pylist(rows, schema=RESPONSE_EVAL.remove_metadata())
    return validate_table(table, RESPONSE_EVAL, source, on_bad_rows="fail").table
