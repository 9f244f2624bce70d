"""What every stage function does around its work: read a table by URI and validate it against its contract
(writing the quarantine), and turn a summary into the finite floats a KFP Metrics artifact holds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError, ValidatedTable, validate_table

log = logging.getLogger(__name__)


def read_valid(uri: str, schema: pa.Schema, on_bad_rows: str, quarantine_uri: str | None) -> ValidatedTable:
    """Read and validate a table; write its quarantine (possibly empty) when a URI is given."""
    validated = validate_table(storage.read_table(uri), schema, source=uri, on_bad_rows=on_bad_rows)
    if quarantine_uri:
        storage.write_table(validated.quarantine, quarantine_uri)
    if validated.quarantine.num_rows:
        log.warning("%s: %d rows quarantined: %s", uri, validated.quarantine.num_rows, validated.reason_counts)
    return validated


def loggable(values: dict) -> dict[str, float]:
    """The finite numbers of a summary, as floats: what a KFP Metrics artifact can hold (no NaN, no None)."""
    return {name: float(value) for name, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)}


def quarantine_metrics(validated: ValidatedTable) -> dict[str, float]:
    """quarantined_rows and one quarantined_<reason> count per reason."""
    metrics = {"quarantined_rows": float(validated.quarantine.num_rows)}
    metrics.update({f"quarantined_{reason.replace(' ', '_')}": float(n)
                    for reason, n in validated.reason_counts.items()})
    return metrics


# --- checking a user's own files against a pipeline's input contracts (`mangadistill validate-data`) ----------

@dataclass(frozen=True)
class PipelineInput:
    """A pipeline parameter that names a table file, and how its first stage reads it: `read(uri)` returns the
    validated table (rows a stage would quarantine in `.quarantine`) or raises DataContractError; None reads it
    with `storage.read_table` and validates it against `contract`."""

    parameter: str
    contract: pa.Schema
    read: Callable[[str], ValidatedTable] | None = None

    def check(self, uri: str) -> ValidatedTable:
        if self.read is not None:
            return self.read(uri)
        return validate_table(storage.read_table(uri), self.contract, source=uri)


@dataclass(frozen=True)
class FileCheck:
    """One file's verdict: the parameter it was checked as, ok, and a line to print (rows, or the problem)."""

    uri: str
    parameter: str
    ok: bool
    message: str


def _file_columns(uri: str) -> set[str]:
    try:
        return set(storage.read_table(uri).column_names)
    except (OSError, ValueError):
        return set()


def check_input_file(uri: str, inputs: Sequence[PipelineInput], parameter: str = "") -> FileCheck:
    """Check one file as the input `parameter` of a pipeline (`inputs`), or, with no parameter, as every input:
    ok when it fits at least one (the message names each it fits), else the verdict of the input sharing most
    columns with the file.

    Not ok: a structural fault (unreadable, missing column, wrong type, empty: the DataContractError naming file,
    column and first bad row) or any row the stage would quarantine (the count and the first: row, column,
    reason). An unknown parameter is a ValueError naming the ones the pipeline takes."""
    by_parameter = {spec.parameter: spec for spec in inputs}
    if parameter and parameter not in by_parameter:
        raise ValueError(f"{parameter!r} is not a table input of this pipeline; inputs: {', '.join(by_parameter)}")
    candidates = [by_parameter[parameter]] if parameter else list(inputs)
    fits, failures, rows = [], [], 0
    for spec in candidates:
        try:
            validated = spec.check(uri)
        except (DataContractError, OSError) as exc:
            failures.append(FileCheck(uri, spec.parameter, False, str(exc)))
            continue
        good, bad = validated.table.num_rows, validated.quarantine.num_rows
        if not bad:
            fits.append(spec.parameter)
            rows = good
            continue
        first = validated.quarantine.to_pylist()[0]
        failures.append(FileCheck(
            uri, spec.parameter, False,
            f"{uri}, column '{first['column']}', row {first['row']}: {first['reason']} ({bad} of {good + bad} rows "
            f"would be quarantined as {spec.parameter})"))
    if fits:
        return FileCheck(uri, fits[0], True, f"OK as {', '.join(fits)} ({rows} rows)")
    if len(failures) == 1:
        return failures[0]
    columns = _file_columns(uri)
    by_name = {spec.parameter: spec for spec in candidates}
    closest = max(failures, key=lambda failure: len(columns & set(by_name[failure.parameter].contract.names)))
    return FileCheck(uri, closest.parameter, False,
                     f"{closest.message} (fits no input; closest: {closest.parameter}; name one as PARAMETER=FILE)")


def check_input_files(arguments: Sequence[str], inputs: Sequence[PipelineInput]) -> list[FileCheck]:
    """`check_input_file` for each argument, `FILE` or `PARAMETER=FILE` (PARAMETER an identifier: one of
    `inputs`' parameters)."""
    checks = []
    for argument in arguments:
        parameter, separator, uri = argument.partition("=")
        if not separator or not parameter.isidentifier():
            parameter, uri = "", argument
        checks.append(check_input_file(uri, inputs, parameter))
    return checks
