"""What every stage function does around its work: read a table by URI and validate it against its contract
(writing the quarantine), and turn a summary into the finite floats a KFP Metrics artifact holds."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from mangadistill.core import storage
from mangadistill.core.contracts import ValidatedTable, validate_table

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
