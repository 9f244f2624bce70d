"""The store catalog contract: one JSON object per line, one series each (sku, title, authors, demographic,
genres, themes, status, volumes, description, price_usd, stock).

`load_catalog` reads the JSONL, conforms it to `CATALOG`, and raises `DataContractError` naming the
file, the column and the first bad row (0-based, counting records) with its line number when a rule breaks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from mangadistill.core.contracts import DataContractError, conform

CATALOG = pa.schema(
    [
        pa.field("sku", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("authors", pa.list_(pa.string()), nullable=False),
        pa.field("demographic", pa.string(), nullable=False),
        pa.field("genres", pa.list_(pa.string()), nullable=False),
        pa.field("themes", pa.list_(pa.string()), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("volumes", pa.int32(), nullable=False),
        pa.field("description", pa.string(), nullable=False),
        pa.field("price_usd", pa.float64(), nullable=False),
        pa.field("stock", pa.int32(), nullable=False),
    ],
    metadata={b"contract": b"catalog"},
)
"""The store catalog: real manga facts plus synthetic store fields (sku, price, stock)."""

DEMOGRAPHICS: tuple[str, ...] = ("shonen", "shojo", "seinen", "josei", "kodomo")
STATUSES: tuple[str, ...] = ("completed", "ongoing", "hiatus")
MAX_DESCRIPTION_CHARS = 160
SKU_PATTERN = re.compile(r"MA-\d{5}")


def _nonempty_text(value: object) -> str | None:
    return "empty text" if not str(value).strip() else None


def _description_length(value: object) -> str | None:
    too_long = len(str(value)) > MAX_DESCRIPTION_CHARS
    return f"description longer than {MAX_DESCRIPTION_CHARS} characters" if too_long else None


def _lowercase_tags(value: object) -> str | None:
    tags = list(value)  # type: ignore[call-overload]
    if any(tag is None or not tag.strip() for tag in tags):
        return "empty tag"
    return None if all(tag == tag.lower() for tag in tags) else "tags must be lowercase"


_ROW_RULES: tuple[tuple[str, Callable[[object], str | None]], ...] = (
    ("sku", lambda v: None if SKU_PATTERN.fullmatch(str(v)) else "sku must look like MA-00001"),
    ("title", _nonempty_text),
    ("authors", lambda v: None if v and all(a and a.strip() for a in v) else "needs at least one author"),
    ("demographic", lambda v: None if v in DEMOGRAPHICS else f"demographic not one of {', '.join(DEMOGRAPHICS)}"),
    ("genres", _lowercase_tags),
    ("themes", _lowercase_tags),
    ("status", lambda v: None if v in STATUSES else f"status not one of {', '.join(STATUSES)}"),
    ("volumes", lambda v: None if v >= 1 else "volumes must be >= 1"),
    ("description", lambda v: _nonempty_text(v) or _description_length(v)),
    ("price_usd", lambda v: None if v > 0 and math.isfinite(v) else "price_usd must be a positive number"),
    ("stock", lambda v: None if v >= 0 else "stock must be >= 0"),
)
_UNIQUE_COLUMNS = ("sku", "title")


def _read_records(path: Path, source: str) -> tuple[list[dict], list[int]]:
    """Parse one JSON object per non-blank line; return the records and their 1-based line numbers."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataContractError(source, None, None, f"cannot read catalog file: {exc}") from exc
    records: list[dict] = []
    line_numbers: list[int] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = len(records)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataContractError(source, None, row, f"line {line_number}: malformed JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise DataContractError(
                source, None, row, f"line {line_number}: expected a JSON object, got {type(record).__name__}")
        missing = [name for name in CATALOG.names if name not in record]
        unknown = sorted(set(record) - set(CATALOG.names))
        if missing or unknown:
            column = missing[0] if missing else unknown[0]
            problem = "missing field" if missing else "unknown field (not in the catalog contract)"
            raise DataContractError(source, column, row, f"line {line_number}: {problem}")
        records.append(record)
        line_numbers.append(line_number)
    return records, line_numbers


def _first_row_of_other_type(values: list[object]) -> int:
    first_type = next((type(v) for v in values if v is not None), None)
    return next((i for i, v in enumerate(values) if v is not None and type(v) is not first_type), 0)


def _to_table(records: list[dict], line_numbers: list[int], source: str) -> pa.Table:
    """Columns with pyarrow-inferred types; `conform` then casts them to the contract."""
    columns: dict[str, pa.Array] = {}
    for name in CATALOG.names:
        values = [record[name] for record in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            row = _first_row_of_other_type(values)
            raise DataContractError(
                source, name, row, f"line {line_numbers[row]}: mixed value types (value {values[row]!r}): {exc}",
            ) from exc
    return pa.table(columns)


def _check_rows(table: pa.Table, line_numbers: list[int], source: str) -> None:
    """Raise for the first null, rule-breaking or duplicate value, column by column."""
    for field in CATALOG:
        values = table.column(field.name).to_pylist()
        for row, value in enumerate(values):
            if value is None:
                raise DataContractError(source, field.name, row, f"line {line_numbers[row]}: missing value")
    for name, rule in _ROW_RULES:
        for row, value in enumerate(table.column(name).to_pylist()):
            if (reason := rule(value)) is not None:
                raise DataContractError(source, name, row, f"line {line_numbers[row]}: {reason} (value {value!r})")
    for name in _UNIQUE_COLUMNS:
        first_row: dict[object, int] = {}
        for row, value in enumerate(table.column(name).to_pylist()):
            if value in first_row:
                raise DataContractError(
                    source, name, row,
                    f"line {line_numbers[row]}: duplicate {name} {value!r} (first at row {first_row[value]})",
                )
            first_row[value] = row


def load_catalog(path: str | Path) -> pa.Table:
    """Read a catalog JSONL into a table with the `CATALOG` schema."""
    catalog_path = Path(path)
    source = str(catalog_path)
    records, line_numbers = _read_records(catalog_path, source)
    table = conform(_to_table(records, line_numbers, source), CATALOG, source=source)
    _check_rows(table, line_numbers, source)
    return table


def catalog_records(path: str | Path) -> list[dict]:
    """The catalog as a list of dicts, one per series, in file order."""
    return load_catalog(path).to_pylist()


PACKAGED_CATALOG = Path(__file__).resolve().parents[1] / "resources" / "catalog.jsonl"
"""The store catalog shipped with the package (`mangadistill/resources/catalog.jsonl`, described in
`sample_data.catalog`): the default wherever a stage takes an optional catalog."""
