"""Tests for mangadistill.core.catalog on the packaged sample (sample_data.catalog): loader and contract errors."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from mangadistill.core.catalog import CATALOG, DEMOGRAPHICS, MAX_DESCRIPTION_CHARS, STATUSES
from mangadistill.core.contracts import DataContractError
from mangadistill.sample_data.catalog import CATALOG_PATH, catalog_records, load_catalog


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return catalog_records()


@pytest.fixture(scope="module")
def by_title(records: list[dict]) -> dict[str, dict]:
    return {record["title"]: record for record in records}


def test_packaged_catalog_loads_with_the_contract_schema() -> None:
    table = load_catalog()
    assert table.schema.equals(CATALOG, check_metadata=True)
    assert table.num_rows >= 150
    assert load_catalog(str(CATALOG_PATH)).equals(table)


def test_skus_and_titles_are_unique(records: list[dict]) -> None:
    for column in ("sku", "title"):
        repeated = [value for value, n in Counter(r[column] for r in records).items() if n > 1]
        assert not repeated, f"duplicate {column}: {repeated}"


def test_catalog_covers_every_demographic_and_mostly_completed_series(records: list[dict]) -> None:
    demographics = Counter(r["demographic"] for r in records)
    statuses = Counter(r["status"] for r in records)
    assert set(demographics) == set(DEMOGRAPHICS)
    assert set(statuses) <= set(STATUSES) and "ongoing" in statuses
    assert statuses["completed"] >= 0.7 * len(records)


def test_store_fields_and_descriptions_are_plausible(records: list[dict]) -> None:
    assert all(9.99 <= r["price_usd"] <= 14.99 and 0 <= r["stock"] <= 60 for r in records)
    assert 5 <= sum(r["stock"] == 0 for r in records) <= 20
    assert all(0 < len(r["description"]) <= MAX_DESCRIPTION_CHARS for r in records)
    assert all(tag == tag.lower() for r in records for tag in r["genres"] + r["themes"])


@pytest.mark.parametrize(
    ("title", "authors", "demographic", "status", "volumes"),
    [
        ("Nana", ["Ai Yazawa"], "shojo", "hiatus", 21),
        ("Fullmetal Alchemist", ["Hiromu Arakawa"], "shonen", "completed", 27),
        ("Slam Dunk", ["Takehiko Inoue"], "shonen", "completed", 31),
        ("Dragon Ball", ["Akira Toriyama"], "shonen", "completed", 42),
        ("Death Note", ["Tsugumi Ohba", "Takeshi Obata"], "shonen", "completed", 12),
        ("Attack on Titan", ["Hajime Isayama"], "shonen", "completed", 34),
        ("Honey and Clover", ["Chica Umino"], "josei", "completed", 10),
        ("Chihayafuru", ["Yuki Suetsugu"], "josei", "completed", 50),
        ("Monster", ["Naoki Urasawa"], "seinen", "completed", 18),
        ("Doraemon", ["Fujiko F. Fujio"], "kodomo", "completed", 45),
    ],
)
def test_spot_check_known_facts(
    by_title: dict[str, dict], title: str, authors: list[str], demographic: str, status: str, volumes: int,
) -> None:
    record = by_title[title]
    assert (record["authors"], record["demographic"], record["status"], record["volumes"]) == (
        authors, demographic, status, volumes,
    )


def test_berserk_credits_kentaro_miura(by_title: dict[str, dict]) -> None:
    assert "Kentaro Miura" in by_title["Berserk"]["authors"]
    assert by_title["Berserk"]["demographic"] == "seinen"


def _lines(records: list[dict]) -> list[str]:
    return [json.dumps(record) for record in records]


def _duplicate_title(records: list[dict]) -> list[str]:
    records[2]["title"] = records[0]["title"]
    return _lines(records)


def _unknown_demographic(records: list[dict]) -> list[str]:
    records[1]["demographic"] = "adult"
    return _lines(records)


def _negative_stock(records: list[dict]) -> list[str]:
    records[2]["stock"] = -3
    return _lines(records)


def _text_volume_count(records: list[dict]) -> list[str]:
    records[1]["volumes"] = "twelve"
    return _lines(records)


def _missing_field(records: list[dict]) -> list[str]:
    del records[2]["status"]
    return _lines(records)


@pytest.mark.parametrize(
    ("break_file", "column", "row", "reason"),
    [
        (_duplicate_title, "title", 2, "duplicate title"),
        (_unknown_demographic, "demographic", 1, "demographic not one of"),
        (_negative_stock, "stock", 2, "stock must be >= 0"),
        (_text_volume_count, "volumes", 1, "twelve"),
        (_missing_field, "status", 2, "missing field"),
    ],
)
def test_bad_row_error_names_file_column_and_row(
    tmp_path: Path, records: list[dict], break_file: Callable[[list[dict]], list[str]],
    column: str, row: int, reason: str,
) -> None:
    bad_file = tmp_path / "bad_catalog.jsonl"
    bad_file.write_text("\n".join(break_file([dict(r) for r in records[:3]])) + "\n", encoding="utf-8")
    with pytest.raises(DataContractError) as caught:
        load_catalog(bad_file)
    message = str(caught.value)
    assert str(bad_file) in message
    assert f"column '{column}'" in message
    assert f"row {row}" in message
    assert reason in message


def test_malformed_json_line_names_file_and_line(tmp_path: Path, records: list[dict]) -> None:
    lines = _lines(records[:3])
    lines[1] = lines[1][:-10]
    bad_file = tmp_path / "truncated.jsonl"
    bad_file.write_text("\n\n".join(lines) + "\n", encoding="utf-8")  # blank lines are skipped, not rows
    with pytest.raises(DataContractError) as caught:
        catalog_records(bad_file)
    message = str(caught.value)
    assert str(bad_file) in message
    assert "row 1" in message and "line 3" in message
    assert "malformed JSON" in message


def test_valid_custom_file_round_trips(tmp_path: Path, records: list[dict]) -> None:
    good_file = tmp_path / "small.jsonl"
    good_file.write_text("\n".join(_lines(records[:5])) + "\n", encoding="utf-8")
    assert catalog_records(good_file) == records[:5]
