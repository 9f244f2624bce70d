"""The response pipeline's table inputs and the contract each file must keep (`mangadistill validate-data
response`); each is read as its first stage reads it (ids filled in, redaction for the examples)."""

from __future__ import annotations

from mangadistill.core.contracts import ValidatedTable
from mangadistill.core.stage_io import PipelineInput
from mangadistill.response.contracts import RESPONSE_EVAL, RESPONSE_EXAMPLES, RESPONSE_PROMPTS


def _prompts(uri: str) -> ValidatedTable:
    from mangadistill.response.dataset import read_prompts

    return read_prompts(uri)


def _examples(source: str):
    def read(uri: str) -> ValidatedTable:
        from mangadistill.response.dataset import read_examples

        return read_examples(uri, source)

    return read


PIPELINE_INPUTS = (
    PipelineInput("eval_uri", RESPONSE_EVAL),
    PipelineInput("human_corrected_uri", RESPONSE_EXAMPLES, _examples("human_corrected")),
    PipelineInput("refusal_escalation_uri", RESPONSE_EXAMPLES, _examples("refusal_escalation")),
    PipelineInput("production_prompts_uri", RESPONSE_PROMPTS, _prompts),
)
"""A file given without its parameter is checked as each of them."""
