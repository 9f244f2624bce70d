"""Data contracts between stages: the engine every wing's contracts use.

A contract is a pyarrow schema with b"contract" (its name) and optionally b"key" (the columns that identify a
row) in its metadata, plus row checks registered with `register_row_checks`. `validate_table` is the one place
that checks a table against its contract. Structural faults (unreadable file, missing column, wrong type,
empty table) raise `DataContractError` naming the file, the column and the first bad row; a cast that would
turn numbers or booleans into text (a float `text` column read as 'nan', '1.5') is such a fault, not a cast.
Row faults (a failed row check, a null in a required column, a NaN or infinite value in any floating-point
column, a duplicate key) are split off into a QUARANTINE table with one reason per row; `on_bad_rows="fail"`
raises instead.

A column may be optional (`optional_field`): when a file lacks it, `conform` fills it with a default value, or
with a copy of another column, so a user's own table needs only the columns a stage cannot do without.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

QUARANTINE = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("message_id", pa.string()),
        pa.field("column", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("value", pa.string()),
    ],
    metadata={b"contract": b"quarantine"},
)
"""Rows a stage refused, one reason each; nothing a stage rejects is dropped without a row here."""


class DataContractError(ValueError):
    """A table broke its contract; the message names the file, the column and the first bad row."""

    def __init__(self, source: str, column: str | None, row: int | None, problem: str):
        where = f"{source}"
        if column is not None:
            where += f", column '{column}'"
        if row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {problem}")
        self.source, self.column, self.row, self.problem = source, column, row, problem


@dataclass(frozen=True)
class ValidatedTable:
    """The rows that kept the contract, and the quarantine table of those that did not."""

    table: pa.Table
    quarantine: pa.Table

    @property
    def reason_counts(self) -> dict[str, int]:
        return dict(Counter(self.quarantine.column("reason").to_pylist()))


RowCheck = Callable[[object], str | None]
"""value -> the reason the value is bad, or None."""


def nonempty_text(value: object) -> str | None:
    """Row check: text with something besides whitespace."""
    return "empty text" if not str(value).strip() else None


def finite_number(value: object) -> str | None:
    """Row check: a number that is neither NaN nor infinite (`validate_table` runs it on every float column)."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return "infinite number" if isinstance(value, float) and math.isinf(value) else None


def nonnegative_number(value: object) -> str | None:
    """Row check: a finite number >= 0 (a count, a cost, a latency)."""
    if (reason := finite_number(value)) is not None:
        return reason
    return "negative number" if isinstance(value, int | float) and value < 0 else None


_ROW_CHECKS: dict[str, dict[str, RowCheck]] = {}
_DEFAULT = b"default"
_DEFAULT_FROM = b"default_from"


def optional_field(name: str, kind: pa.DataType, *, default: object = None, copy_of: str = "",
                   nullable: bool | None = None) -> pa.Field:
    """A contract column a file may leave out: `conform` fills it with `default` (JSON-encodable; None: null, so
    the field is nullable unless told otherwise) or, with `copy_of`, with a copy of that column."""
    metadata = {_DEFAULT_FROM: copy_of.encode()} if copy_of else {_DEFAULT: json.dumps(default).encode()}
    return pa.field(name, kind, nullable=(default is None and not copy_of) if nullable is None else nullable,
                    metadata=metadata)


def _filled_column(table: pa.Table, field: pa.Field) -> pa.ChunkedArray | pa.Array | None:
    """The column an optional field gets when the table lacks it (None: the field is required)."""
    metadata = field.metadata or {}
    if _DEFAULT_FROM in metadata:
        source = metadata[_DEFAULT_FROM].decode()
        return table.column(source) if source in table.column_names else None
    if _DEFAULT in metadata:
        default = json.loads(metadata[_DEFAULT])
        return pa.array([default] * table.num_rows, type=field.type)
    return None


def required_columns(schema: pa.Schema) -> list[str]:
    """The columns a file must have: those without a default (`optional_field`)."""
    return [field.name for field in schema if not {_DEFAULT, _DEFAULT_FROM} & set(field.metadata or {})]


def register_row_checks(schema: pa.Schema, checks: Mapping[str, RowCheck]) -> pa.Schema:
    """Attach row checks {column: check(value) -> reason | None} to a contract (by its b"contract" name);
    `validate_table` runs them on every non-null value. Returns the schema, so a wing can write
    `SOFT_LABELS = register_row_checks(pa.schema(...), {...})`."""
    unknown = [column for column in checks if column not in schema.names]
    if unknown:
        raise ValueError(f"contract '{_contract_name(schema)}' has no column(s) {unknown}")
    _ROW_CHECKS.setdefault(_contract_name(schema), {}).update(checks)
    return schema


def row_checks(schema: pa.Schema) -> dict[str, RowCheck]:
    """The row checks registered for a contract."""
    return dict(_ROW_CHECKS.get(_contract_name(schema), {}))


def _contract_name(schema: pa.Schema) -> str:
    return (schema.metadata or {}).get(b"contract", b"table").decode()


def _is_not_text(kind: pa.DataType) -> bool:
    """Numbers with a fraction and booleans: cast to a string they would become made-up text ('nan', 'True')."""
    return pa.types.is_floating(kind) or pa.types.is_decimal(kind) or pa.types.is_boolean(kind)


def _first_uncastable_row(column: pa.ChunkedArray, target: pa.DataType) -> int:
    for i, value in enumerate(column.to_pylist()):
        try:
            pa.array([value]).cast(target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
            return i
    return 0


def conform(table: pa.Table, schema: pa.Schema, source: str) -> pa.Table:
    """Select and cast the schema's columns, or raise naming the missing column or first uncastable row."""
    if table.num_rows == 0:
        raise DataContractError(source, None, None, f"empty dataset: no rows for contract '{_contract_name(schema)}'")
    columns = []
    for field in schema:
        column = table.column(field.name) if field.name in table.column_names else _filled_column(table, field)
        if column is None:
            raise DataContractError(
                source, field.name, None,
                f"missing column (contract '{_contract_name(schema)}' needs {', '.join(required_columns(schema))};"
                f" found {', '.join(table.column_names)})",
            )
        if pa.types.is_string(field.type) and _is_not_text(column.type):
            row = next((i for i, value in enumerate(column.to_pylist()) if value is not None), 0)
            raise DataContractError(
                source, field.name, row,
                f"wrong type: expected text ({field.type}), found {column.type} (value {column[row].as_py()!r});"
                " numbers are not cast to text",
            )
        if not column.type.equals(field.type):
            found = column
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                row = _first_uncastable_row(found, field.type)
                raise DataContractError(
                    source, field.name, row,
                    f"wrong type: expected {field.type}, found {found.type} (value {found[row].as_py()!r}): {exc}",
                ) from exc
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema.with_metadata(schema.metadata))


def _key_columns(schema: pa.Schema) -> list[str]:
    """The columns that identify a row: schema metadata b"key" (comma-separated), else message_id if present."""
    declared = (schema.metadata or {}).get(b"key")
    if declared:
        return declared.decode().split(",")
    return ["message_id"] if "message_id" in schema.names else []


def validate_table(
    table: pa.Table,
    schema: pa.Schema,
    source: str,
    on_bad_rows: str = "quarantine",
    max_bad_fraction: float = 0.2,
    extra_checks: Iterable[tuple[str, RowCheck]] = (),
) -> ValidatedTable:
    """Check `table` against `schema`; return the good rows and a QUARANTINE table of the rest.

    A row is bad when a non-nullable column is null, or a row check fails (those the contract registered with
    `register_row_checks`, then `extra_checks`, then `finite_number` on every float column), or its key
    repeats an earlier row (the key is message_id, or the columns named in the schema's b"key" metadata, e.g.
    "query_id,sku"; the quarantine's message_id column then holds the key values joined by "|"). With
    on_bad_rows="fail", or when more than `max_bad_fraction` of the rows are bad, the first bad row raises
    DataContractError instead.
    """
    if on_bad_rows not in ("quarantine", "fail"):
        raise ValueError(f"on_bad_rows must be 'quarantine' or 'fail', got {on_bad_rows!r}")
    table = conform(table, schema, source)
    checks = list(row_checks(schema).items())
    checks += list(extra_checks)
    checks += [(field.name, finite_number) for field in schema if pa.types.is_floating(field.type)]
    nullable = {field.name: field.nullable for field in schema}
    pylists = {name: table.column(name).to_pylist() for name in schema.names}
    key_columns = _key_columns(schema)
    key_values = [pylists[name] for name in key_columns]
    ids = ["|".join(map(str, key)) for key in zip(*key_values, strict=True)] if key_columns else None
    duplicate_reason = f"duplicate {key_columns[0]}" if len(key_columns) == 1 else (
        f"duplicate ({', '.join(key_columns)}) pair")
    seen: set[str] = set()
    bad: list[dict] = []
    for row in range(table.num_rows):
        reason = column = None
        value: object = None
        for field in schema:
            if pylists[field.name][row] is None and not nullable[field.name]:
                reason, column = "missing value", field.name
                break
        if reason is None:
            for name, check in checks:
                value = pylists[name][row]
                if value is not None and (reason := check(value)) is not None:
                    column = name
                    break
        if reason is None and ids is not None:
            if ids[row] in seen:
                reason, column, value = duplicate_reason, ", ".join(key_columns), ids[row]
            seen.add(ids[row])
        if reason is not None:
            bad.append({
                "source": source, "row": row, "message_id": None if ids is None else ids[row],
                "column": column, "reason": reason, "value": None if value is None else str(value)[:200],
            })
    if bad and (on_bad_rows == "fail" or len(bad) > max_bad_fraction * table.num_rows):
        first = bad[0]
        share = f"{len(bad)} of {table.num_rows} rows are bad"
        raise DataContractError(source, first["column"], first["row"], f"{first['reason']} ({share})")
    bad_rows = pa.array([b["row"] for b in bad], type=pa.int64())
    keep = pc.invert(pc.is_in(pa.array(range(table.num_rows), type=pa.int64()), value_set=bad_rows))
    return ValidatedTable(table.filter(keep), quarantine_table(bad))


def quarantine_table(rows: list[dict]) -> pa.Table:
    """Build a QUARANTINE table from dicts with its column names."""
    return pa.Table.from_pylist(rows, schema=QUARANTINE)


def concat_quarantine(tables: Iterable[pa.Table]) -> pa.Table:
    return pa.concat_tables([quarantine_table([]), *tables])


