"""The hand-written response evaluation set (resources/response_eval_handwritten.jsonl, HANDWRITTEN_RESPONSE.md):
it meets the RESPONSE_EVAL contract, covers every slice, and for every row the reviewed reference answer
passes its slice check while the row's bad answer fails it."""

from collections import Counter
from importlib import resources

import pytest

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.response.contracts import RESPONSE_EVAL, RESPONSE_EVAL_SLICES
from mangadistill.response.evalset import HANDWRITTEN_EVAL_FILE, handwritten_eval_set
from mangadistill.response.factcheck import CatalogIndex, check_responses
from mangadistill.response.gate import slice_check
from mangadistill.sample_data.catalog import catalog_records

EVAL_FILE = HANDWRITTEN_EVAL_FILE
ROWS_PER_SLICE = 18


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    path = resources.files("mangadistill.resources").joinpath(EVAL_FILE)
    with resources.as_file(path) as local:
        table = storage.read_table(str(local))
    validate_table(table.select(RESPONSE_EVAL.names), RESPONSE_EVAL, EVAL_FILE, on_bad_rows="fail")
    return table.to_pylist()


@pytest.fixture(scope="module")
def catalog() -> CatalogIndex:
    return CatalogIndex(catalog_records())


def _slice_checks(rows: list[dict], column: str, catalog: CatalogIndex) -> dict[str, bool]:
    """{eval_id: slice_check of the row's `column` answer}, with the fact checks built as the gate builds them."""
    answers = [row[column] for row in rows]
    facts = check_responses(answers, catalog, [row["eval_id"] for row in rows])[0].to_pylist()
    return {row["eval_id"]: slice_check(row, answer, fact) for row, answer, fact in zip(rows, answers, facts,
                                                                                           strict=True)}


def test_every_slice_has_its_share_of_rows(rows):
    assert Counter(row["slice"] for row in rows) == dict.fromkeys(RESPONSE_EVAL_SLICES, ROWS_PER_SLICE)


def test_every_reference_answer_passes_its_slice_check(rows, catalog):
    failed = [eval_id for eval_id, passed in _slice_checks(rows, "reference_response", catalog).items() if not passed]
    assert not failed


def test_every_bad_answer_fails_its_slice_check(rows, catalog):
    passed = [eval_id for eval_id, ok in _slice_checks(rows, "bad_response", catalog).items() if ok]
    assert not passed


def test_handwritten_eval_set_is_the_file_under_the_eval_contract(rows):
    table = handwritten_eval_set()
    assert table.schema.names == RESPONSE_EVAL.names  # bad_response stays out of the pipeline's input
    assert table.column("eval_id").to_pylist() == [row["eval_id"] for row in rows]


def test_handwritten_eval_set_takes_the_first_rows_of_each_slice(rows):
    table = handwritten_eval_set(per_slice=3)
    expected = [row["eval_id"] for s in RESPONSE_EVAL_SLICES for row in [r for r in rows if r["slice"] == s][:3]]
    assert sorted(table.column("eval_id").to_pylist()) == sorted(expected)
    assert Counter(table.column("slice").to_pylist()) == dict.fromkeys(RESPONSE_EVAL_SLICES, 3)


def test_handwritten_eval_set_refuses_an_empty_share():
    with pytest.raises(ValueError, match="per_slice must be at least 1"):
        handwritten_eval_set(per_slice=0)
