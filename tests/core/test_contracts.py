import math

import pyarrow as pa
import pytest

from mangadistill.core.contracts import QUARANTINE, DataContractError, conform, validate_table
from mangadistill.intent.contracts import LABELLED_MESSAGES, MESSAGES, SOFT_LABELS
from mangadistill.intent.labels import INTENTS


def _soft_row(i: int, probs: list[float], label: str = "faq") -> dict:
    return {"message_id": f"m{i}", "text": f"text {i}", "soft_label": probs, "hard_label": label,
            "entropy": 0.1, "members": ["classifier"], "members_agree": True}


def _one_hot(k: int) -> list[float]:
    return [1.0 if j == k else 0.0 for j in range(len(INTENTS))]


def test_missing_column_names_file_and_column():
    table = pa.table({"message_id": ["a"], "body": ["hi"]})
    with pytest.raises(DataContractError) as err:
        conform(table, MESSAGES, "gs://b/log.parquet")
    assert "gs://b/log.parquet" in str(err.value) and "'text'" in str(err.value) and "missing column" in str(err.value)


def test_wrong_type_names_the_first_bad_row():
    table = pa.table({"message_id": ["a", "b", "c"], "text": ["x", "y", "z"],
                      "soft_label": [_one_hot(0), _one_hot(1), _one_hot(2)], "hard_label": ["faq"] * 3,
                      "entropy": ["0.1", "0.2", "high"], "members": [["classifier"]] * 3,
                      "members_agree": [True] * 3})
    with pytest.raises(DataContractError) as err:
        conform(table, SOFT_LABELS, "soft.parquet")
    assert err.value.column == "entropy" and err.value.row == 2 and "wrong type" in str(err.value)


def test_empty_dataset_is_an_error():
    with pytest.raises(DataContractError, match="empty dataset"):
        validate_table(pa.table({"message_id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
                       MESSAGES, "empty.parquet")


def test_row_faults_are_quarantined_with_reasons():
    rows = [_soft_row(0, _one_hot(5)), _soft_row(1, [0.5] * len(INTENTS)), _soft_row(2, _one_hot(1), "bogus"),
            _soft_row(3, [math.nan] + [1.0 / 7] * 7), _soft_row(4, _one_hot(5))]
    rows.append({**_soft_row(5, _one_hot(5)), "message_id": "m0"})
    rows += [_soft_row(i, _one_hot(i % len(INTENTS))) for i in range(6, 30)]
    validated = validate_table(pa.Table.from_pylist(rows), SOFT_LABELS, "soft.parquet")
    assert validated.table.num_rows == 30 - 4
    reasons = dict(zip(validated.quarantine.column("row").to_pylist(),
                       validated.quarantine.column("reason").to_pylist(), strict=True))
    assert "sum to" in reasons[1] and reasons[2] == "unknown intent label"
    assert reasons[3] == "NaN probability" and reasons[5] == "duplicate message_id"
    assert validated.quarantine.schema.equals(QUARANTINE, check_metadata=False)
    assert validated.reason_counts["unknown intent label"] == 1


def test_fail_mode_and_too_many_bad_rows_raise_at_first_bad_row():
    table = pa.table({"message_id": ["a", "b", "c"], "text": ["ok", "fine", "good"],
                      "label": ["faq", "nonsense", "escalation"]})
    with pytest.raises(DataContractError) as err:
        validate_table(table, LABELLED_MESSAGES, "eval.parquet", on_bad_rows="fail")
    assert (err.value.column, err.value.row) == ("label", 1) and "eval.parquet" in str(err.value)
    with pytest.raises(DataContractError, match="1 of 3 rows are bad"):
        validate_table(table, LABELLED_MESSAGES, "eval.parquet", max_bad_fraction=0.1)


def test_empty_text_and_null_are_quarantined():
    table = pa.table({"message_id": ["a", "b", "c", "d", "e"], "text": ["hi", "   ", None, "yo", "hey"]})
    validated = validate_table(table, MESSAGES, "log.jsonl", max_bad_fraction=0.5)
    assert validated.table.column("message_id").to_pylist() == ["a", "d", "e"]
    assert sorted(validated.quarantine.column("reason").to_pylist()) == ["empty text", "missing value"]


def test_extra_columns_are_dropped_and_types_cast():
    table = pa.table({"message_id": ["a"], "text": ["hi"], "label": ["faq"], "extra": [1]})
    assert conform(table, MESSAGES, "x").column_names == ["message_id", "text"]


def test_row_checks_belong_to_the_contract_that_registered_them():
    from mangadistill.core.contracts import nonempty_text, register_row_checks, row_checks

    mine = register_row_checks(pa.schema([pa.field("note", pa.string())], metadata={b"contract": b"test_notes"}),
                               {"note": nonempty_text})
    other = pa.schema([pa.field("note", pa.string())], metadata={b"contract": b"test_other_notes"})
    table = pa.table({"note": ["fine", "good", "ok", "also fine", "  "]})
    assert validate_table(table, mine, "notes.parquet").quarantine.column("reason").to_pylist() == ["empty text"]
    assert validate_table(table, other, "notes.parquet").quarantine.num_rows == 0
    assert row_checks(other) == {}
    with pytest.raises(ValueError, match="has no column"):
        register_row_checks(mine, {"missing": nonempty_text})


def test_non_finite_floats_are_quarantined_in_every_float_column():
    rows = [_soft_row(i, _one_hot(i % len(INTENTS))) for i in range(20)]
    rows[3]["entropy"], rows[7]["entropy"] = math.nan, math.inf
    validated = validate_table(pa.Table.from_pylist(rows), SOFT_LABELS, "soft.parquet")
    bad = validated.quarantine.to_pylist()
    assert [(b["row"], b["column"], b["reason"]) for b in bad] == [(3, "entropy", "NaN"),
                                                                (7, "entropy", "infinite number")]
    unchecked = pa.schema([pa.field("score", pa.float64())], metadata={b"contract": b"test_scores"})
    scores = pa.table({"score": [0.5] * 9 + [-math.inf]})
    assert validate_table(scores, unchecked, "s.parquet").quarantine.column("reason").to_pylist() == [
        "infinite number"]


@pytest.mark.parametrize("values", [[1.5, math.nan, 2.0], [None, math.nan, 0.25], [True, False, True]])
def test_numbers_are_not_cast_to_text(values):
    table = pa.table({"message_id": ["a", "b", "c"], "text": values})
    with pytest.raises(DataContractError) as err:
        validate_table(table, MESSAGES, "log.parquet")
    first = next(i for i, v in enumerate(values) if v is not None)
    assert (err.value.column, err.value.row) == ("text", first) and "numbers are not cast to text" in str(err.value)
    assert "log.parquet" in str(err.value)


def test_integer_ids_are_still_read_as_text():
    table = pa.table({"message_id": [101, 102], "text": ["hi", "yo"]})
    assert conform(table, MESSAGES, "log.csv").column("message_id").to_pylist() == ["101", "102"]


def test_an_optional_column_is_filled_when_absent_and_checked_when_present():
    from mangadistill.core.contracts import optional_field, required_columns

    schema = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("title", pa.string(), nullable=False),
                        optional_field("text", pa.string(), copy_of="title"),
                        optional_field("kind", pa.string(), default="unspecified"),
                        optional_field("score", pa.float32())],
                       metadata={b"contract": b"optional_demo", b"key": b"id"})
    assert required_columns(schema) == ["id", "title"]
    filled = validate_table(pa.Table.from_pylist([{"id": "a", "title": "Berserk"}]), schema, "f.csv").table
    assert filled.to_pylist() == [{"id": "a", "title": "Berserk", "text": "Berserk", "kind": "unspecified",
                                   "score": None}]
    with pytest.raises(DataContractError) as err:  # present, so it must have the right type
        validate_table(pa.Table.from_pylist([{"id": "a", "title": "B", "score": "high"}]), schema, "f.csv")
    assert (err.value.column, err.value.row) == ("score", 0)
    with pytest.raises(DataContractError, match="needs id, title; found id"):
        validate_table(pa.Table.from_pylist([{"id": "a"}]), schema, "f.csv")
