"""The reranker pipeline's table inputs and the contract each file must keep (`mangadistill validate-data
reranker`)."""

from __future__ import annotations

from mangadistill.core.stage_io import PipelineInput
from mangadistill.reranker.contracts import RERANK_CANDIDATES, RERANK_QUERIES

PIPELINE_INPUTS = (
    PipelineInput("production_candidates_uri", RERANK_CANDIDATES),
    PipelineInput("production_queries_uri", RERANK_QUERIES),
    PipelineInput("labelled_candidates_uri", RERANK_CANDIDATES),
    PipelineInput("eval_candidates_uri", RERANK_CANDIDATES),
)
"""A file given without its parameter is checked as each of them."""
