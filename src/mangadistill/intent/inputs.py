"""The intent pipeline's table inputs and the contract each file must keep (`mangadistill validate-data intent`)."""

from __future__ import annotations

import pyarrow as pa

from mangadistill.core import storage
from mangadistill.core.contracts import ValidatedTable, validate_table
from mangadistill.core.stage_io import PipelineInput
from mangadistill.intent.contracts import HANDWRITTEN_MESSAGES, LABELLED_MESSAGES, MESSAGES


def _read_handwritten(uri: str) -> ValidatedTable:
    """As intent_handwritten_eval reads it: LABELLED_MESSAGES, `also_plausible` optional (null when absent)."""
    table = storage.read_table(uri)
    if "also_plausible" not in table.column_names:
        table = table.append_column("also_plausible", pa.nulls(table.num_rows, pa.string()))
    return validate_table(table, HANDWRITTEN_MESSAGES, source=uri)


PIPELINE_INPUTS = (
    PipelineInput("production_log_uri", MESSAGES),
    PipelineInput("eval_uri", LABELLED_MESSAGES),
    PipelineInput("handwritten_eval_uri", HANDWRITTEN_MESSAGES, _read_handwritten),
)
"""A file given without its parameter is checked as each of them."""
