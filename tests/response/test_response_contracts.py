"""Response contracts on real files: blank texts and impossible numbers go to the quarantine with a reason."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pytest

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.response.contracts import RESPONSE_EXAMPLES, RESPONSE_PROMPTS, TEACHER_RESPONSES
from mangadistill.response.dataset import read_examples


def _teacher_row(i: int, **changes) -> dict:
    row = {"prompt_id": f"p{i:03d}", "prompt": f"is volume {i} of One Piece out?", "response": f"Yes, volume {i}.",
           "model": "teacher", "prompt_version": "v1+r1", "retrieved_skus": ["OP-1"], "prompt_tokens": 40,
           "completion_tokens": 8, "cost_usd": 0.0003, "cached": False, "latency_s": 0.4, "cache_key": f"k{i}"}
    return {**row, **changes}


BAD_TEACHER_ROWS = [  # (column, reason, changes): what the probe slipped through the contracts
    ("prompt", "empty text", {"prompt": ""}),
    ("prompt", "empty text", {"prompt": "   "}),
    ("prompt", "empty text", {"prompt": "\n\t"}),
    ("response", "empty text", {"response": ""}),
    ("response", "empty text", {"response": "  \n "}),
    ("response", "empty text", {"response": "\u3000"}),
    ("cost_usd", "NaN", {"cost_usd": math.nan}),
    ("cost_usd", "infinite number", {"cost_usd": math.inf}),
    ("cost_usd", "negative number", {"cost_usd": -0.01}),
    ("latency_s", "infinite number", {"latency_s": math.inf}),
    ("latency_s", "infinite number", {"latency_s": -math.inf}),
    ("latency_s", "NaN", {"latency_s": math.nan}),
    ("latency_s", "negative number", {"latency_s": -1.0}),
    ("prompt_tokens", "negative number", {"prompt_tokens": -5}),
    ("completion_tokens", "negative number", {"completion_tokens": -1}),
]


def test_every_bad_teacher_row_is_quarantined_with_its_reason(tmp_path):
    good = [_teacher_row(i) for i in range(60)]
    bad = [_teacher_row(100 + i, **changes) for i, (_, _, changes) in enumerate(BAD_TEACHER_ROWS)]
    uri = tmp_path / "teacher.parquet"
    storage.write_table(pa.Table.from_pylist(good + bad), uri)
    validated = validate_table(storage.read_table(uri), TEACHER_RESPONSES, str(uri))
    assert validated.table.num_rows == len(good)
    found = [(q["row"], q["column"], q["reason"]) for q in validated.quarantine.to_pylist()]
    assert found == [(len(good) + i, column, reason) for i, (column, reason, _) in enumerate(BAD_TEACHER_ROWS)]


@pytest.mark.parametrize("schema", [RESPONSE_PROMPTS, RESPONSE_EXAMPLES])
def test_blank_prompts_and_responses_never_reach_training(tmp_path, schema):
    rows = [{"prompt_id": f"p{i}", "prompt": f"question {i}", "response": f"answer {i}", "source": "teacher",
             "provenance": "t", "category": None} for i in range(10)]
    rows[2]["prompt"], rows[5]["response"] = " ", "\n"
    uri = tmp_path / "rows.jsonl"
    storage.write_text(uri, "".join(json.dumps(row) + "\n" for row in rows))
    validated = validate_table(storage.read_table(uri), schema, str(uri))
    reasons = {(q["row"], q["column"]): q["reason"] for q in validated.quarantine.to_pylist()}
    expected = {(2, "prompt"): "empty text"} | ({(5, "response"): "empty text"} if "response" in schema.names else {})
    assert reasons == expected


def test_read_examples_quarantines_a_blank_response(tmp_path):
    uri = tmp_path / "human.jsonl"
    rows = [{"prompt_id": f"h{i}", "prompt": f"question {i}", "response": "  " if i == 3 else f"answer {i}"}
            for i in range(8)]
    storage.write_text(uri, "".join(json.dumps(row) + "\n" for row in rows))
    validated = read_examples(str(uri), "human_corrected")
    assert validated.table.num_rows == 7 and validated.reason_counts == {"empty text": 1}
