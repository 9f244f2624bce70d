"""Data contracts between stages: every table a stage reads or writes has its pyarrow schema here.

`validate_table` is the one place that checks a table against its contract. Structural faults (unreadable
file, missing column, wrong type, empty table) raise `DataContractError` naming the file, the column and the
first bad row. Row faults (unknown label, NaN, soft labels that do not sum to 1, empty text, duplicate id)
are split off into a quarantine table with one reason per row; `on_bad_rows="fail"` raises instead.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from mangadistill.intents import INTENTS

SOFT_LABEL_TOLERANCE = 1e-3
_META = {b"intents": json.dumps(list(INTENTS)).encode()}

MESSAGES = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ],
    metadata={b"contract": b"messages"},
)
"""Unlabelled customer messages (the production log)."""

LABELLED_MESSAGES = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
    ],
    metadata={b"contract": b"labelled_messages", **_META},
)
"""Messages with one intent label each (teacher training split, human-labelled evaluation split)."""

MEMBER_VOTES = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("classifier_probs", pa.list_(pa.float32()), nullable=False),
        pa.field("rule_intent", pa.string()),
        pa.field("rule_ids", pa.list_(pa.string()), nullable=False),
        pa.field("adjudicator_probs", pa.list_(pa.float32())),
        pa.field("members", pa.list_(pa.string()), nullable=False),
        pa.field("classifier_margin", pa.float32(), nullable=False),
        pa.field("classifier_entropy", pa.float32(), nullable=False),
    ],
    metadata={b"contract": b"member_votes", **_META},
)
"""What each teacher-ensemble member said about each message; `members` names who voted on the row."""

SOFT_LABELS = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("soft_label", pa.list_(pa.float32()), nullable=False),
        pa.field("hard_label", pa.string(), nullable=False),
        pa.field("entropy", pa.float32(), nullable=False),
        pa.field("members", pa.list_(pa.string()), nullable=False),
        pa.field("members_agree", pa.bool_(), nullable=False),
    ],
    metadata={b"contract": b"soft_labels", **_META},
)
"""One probability per intent (INTENTS order, summing to 1) and its argmax, per message."""

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
"""The MangaAssist store catalog: real manga facts plus synthetic store fields (sku, price, stock)."""


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


RowCheck = Callable[[str, object], str | None]
"""(column, value) -> reason the value is bad, or None."""


def _label_check(value: object) -> str | None:
    return None if value in INTENTS else "unknown intent label"


def _text_check(value: object) -> str | None:
    return "empty text" if not str(value).strip() else None


def _probs_check(value: object) -> str | None:
    probs = list(value)  # type: ignore[call-overload]
    if len(probs) != len(INTENTS):
        return f"expected {len(INTENTS)} probabilities, got {len(probs)}"
    if any(p is None or math.isnan(p) for p in probs):
        return "NaN probability"
    if any(p < 0 for p in probs):
        return "negative probability"
    if abs(sum(probs) - 1.0) > SOFT_LABEL_TOLERANCE:
        return f"probabilities sum to {sum(probs):.4f}, not 1 within {SOFT_LABEL_TOLERANCE}"
    return None


def _float_check(value: object) -> str | None:
    return "NaN" if isinstance(value, float) and math.isnan(value) else None


_ROW_CHECKS: dict[str, Callable[[object], str | None]] = {
    "text": _text_check,
    "label": _label_check,
    "hard_label": _label_check,
    "rule_intent": _label_check,
    "soft_label": _probs_check,
    "classifier_probs": _probs_check,
    "adjudicator_probs": _probs_check,
    "classifier_margin": _float_check,
    "classifier_entropy": _float_check,
    "entropy": _float_check,
}


def _contract_name(schema: pa.Schema) -> str:
    return (schema.metadata or {}).get(b"contract", b"table").decode()


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
        if field.name not in table.column_names:
            raise DataContractError(
                source, field.name, None,
                f"missing column (contract '{_contract_name(schema)}' needs {', '.join(schema.names)};"
                f" found {', '.join(table.column_names)})",
            )
        column = table.column(field.name)
        if not column.type.equals(field.type):
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                row = _first_uncastable_row(column, field.type)
                raise DataContractError(
                    source, field.name, row,
                    f"wrong type: expected {field.type}, found {table.column(field.name).type}"
                    f" (value {table.column(field.name)[row].as_py()!r}): {exc}",
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
    extra_checks: Iterable[tuple[str, Callable[[object], str | None]]] = (),
) -> ValidatedTable:
    """Check `table` against `schema`; return the good rows and a QUARANTINE table of the rest.

    A row is bad when a non-nullable column is null, or a column's row check fails (unknown intent label,
    NaN, probabilities that do not sum to 1 within SOFT_LABEL_TOLERANCE, empty text), or its key repeats an
    earlier row (the key is message_id, or the columns named in the schema's b"key" metadata, e.g. "query_id,sku";
    the quarantine's message_id column then holds the key values joined by "|"). With on_bad_rows="fail", or
    when more than `max_bad_fraction` of the rows are bad, the first bad row raises DataContractError instead.
    """
    if on_bad_rows not in ("quarantine", "fail"):
        raise ValueError(f"on_bad_rows must be 'quarantine' or 'fail', got {on_bad_rows!r}")
    table = conform(table, schema, source)
    checks = [(name, check) for name, check in _ROW_CHECKS.items() if name in schema.names]
    checks += list(extra_checks)
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


# --- Reranker (Scenario 2): queries, judged candidates, teacher scores ------------------------------------

RELEVANCE_GRADES = (0, 1, 2, 3)
_RERANK_KEY = {b"key": b"query_id,sku"}

RERANK_QUERIES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("constraints", pa.list_(pa.string()), nullable=False),
    ],
    metadata={b"contract": b"rerank_queries", b"key": b"query_id"},
)
"""Shopping queries; `constraints` describes, in words, the catalog facts the relevance grades come from."""

RERANK_CANDIDATES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("sku", pa.string(), nullable=False),
        pa.field("candidate", pa.string(), nullable=False),
        pa.field("candidate_text", pa.string(), nullable=False),
        pa.field("retrieval_rank", pa.int32()),
        pa.field("bm25_score", pa.float32(), nullable=False),
        pa.field("relevance", pa.int8()),
    ],
    metadata={b"contract": b"rerank_candidates", **_RERANK_KEY},
)
"""One row per (query, catalog item) to rerank: `candidate` is the title, `candidate_text` the text a model
reads (`retrieval.catalog_document`), `retrieval_rank` the 1-based BM25 rank (null for a judged item added
because BM25 missed it), `relevance` the graded judgment 0-3 where known (null on unlabelled queries)."""

RERANK_TEACHER_SCORES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("sku", pa.string(), nullable=False),
        pa.field("candidate", pa.string(), nullable=False),
        pa.field("candidate_text", pa.string(), nullable=False),
        pa.field("teacher_score", pa.float32(), nullable=False),
        pa.field("relevance", pa.int8()),
    ],
    metadata={b"contract": b"rerank_teacher_scores", **_RERANK_KEY},
)
"""The seed's teacher output ({"query", "candidate", "teacher_score"}) plus ids, the text the teacher read and
the supervised label where known; teacher_score is a probability in [0, 1] (sigmoid of the logit)."""


def _teacher_score_check(value: object) -> str | None:
    score = float(value)  # type: ignore[arg-type]
    if math.isnan(score):
        return "NaN teacher score"
    return None if 0.0 <= score <= 1.0 else "teacher score outside [0, 1]"


def _relevance_check(value: object) -> str | None:
    return None if value in RELEVANCE_GRADES else f"relevance not one of {RELEVANCE_GRADES}"


_ROW_CHECKS.update({
    "query": _text_check,
    "candidate_text": _text_check,
    "teacher_score": _teacher_score_check,
    "relevance": _relevance_check,
})


def check_query_coverage(queries: pa.Table, candidates: pa.Table, source: str) -> ValidatedTable:
    """Split `queries` (RERANK_QUERIES rows) into those with at least one row in `candidates` (any table with
    query_id) and a quarantine of those without, reason "query has no candidates"."""
    covered = set(candidates.column("query_id").to_pylist())
    query_ids = queries.column("query_id").to_pylist()
    bad = [
        {"source": source, "row": row, "message_id": query_id, "column": "query_id",
         "reason": "query has no candidates", "value": query_id}
        for row, query_id in enumerate(query_ids) if query_id not in covered
    ]
    keep = pa.array([query_id in covered for query_id in query_ids], type=pa.bool_())
    return ValidatedTable(queries.filter(keep), quarantine_table(bad))


# --- Response teacher labelling (Scenario 1): one teacher answer per production prompt -------------------

TEACHER_RESPONSES = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("response", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("prompt_version", pa.string(), nullable=False),
        pa.field("retrieved_skus", pa.list_(pa.string()), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),
        pa.field("completion_tokens", pa.int64(), nullable=False),
        pa.field("cost_usd", pa.float64(), nullable=False),
        pa.field("cached", pa.bool_(), nullable=False),
        pa.field("latency_s", pa.float64(), nullable=False),
        pa.field("cache_key", pa.string(), nullable=False),
    ],
    metadata={b"contract": b"teacher_responses"},
)
"""A teacher's answer to one (redacted) prompt, the catalog records its prompt was grounded on, and what it cost
(tokens and USD as recorded when the answer was produced; `cached` says whether this run reused it)."""


# --- Response dataset and curation (Scenario 1): prompts, training examples, fact checks, eval set ------

RESPONSE_SOURCES = ("teacher", "human_corrected", "refusal_escalation")
"""Where a training response came from: a teacher answer to a production prompt, an answer a person fixed,
or a refusal/escalation example."""
RESPONSE_EVAL_SLICES = ("policy", "escalation", "factuality")
"""The slices of the fixed human-reviewed response evaluation set; every evaluation reports each one."""
RESPONSE_ACTIONS = ("answer", "refuse", "handoff")

RESPONSE_PROMPTS = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
    ],
    metadata={b"contract": b"response_prompts", b"key": b"prompt_id"},
)
"""Production prompts as imported (customer questions to the assistant, possibly with personal data)."""

PREPARED_PROMPTS = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("redacted_kinds", pa.list_(pa.string()), nullable=False),
    ],
    metadata={b"contract": b"prepared_prompts", b"key": b"prompt_id"},
)
"""Redacted, de-duplicated production prompts with their split ("train" / "validation"); `redacted_kinds`
names the kinds of personal data replaced by placeholders (redaction.PII_KINDS). Only these reach a teacher."""

RESPONSE_EXAMPLES = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("response", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("provenance", pa.string(), nullable=False),
        pa.field("category", pa.string()),
    ],
    metadata={b"contract": b"response_examples", b"key": b"prompt_id"},
)
"""A (prompt, response) training example; `source` is one of RESPONSE_SOURCES, `provenance` says who wrote
the response (teacher model and prompt version, reviewer, or example set), `category` the kind of request."""

FINDING_STRUCT = pa.struct([
    pa.field("kind", pa.string()),
    pa.field("claim", pa.string()),
    pa.field("title", pa.string()),
    pa.field("expected", pa.string()),
])
"""One unsupported claim (factcheck.FINDING_KINDS): the claim as written, its title, what the catalog says."""

FACT_CHECK = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),
        pa.field("response_id", pa.string()),
        pa.field("n_claims", pa.int32(), nullable=False),
        pa.field("n_findings", pa.int32(), nullable=False),
        pa.field("unsupported", pa.bool_(), nullable=False),
        pa.field("findings", pa.list_(FINDING_STRUCT), nullable=False),
    ],
    metadata={b"contract": b"fact_check"},
)
"""The catalog fact checker's verdict per response (row = position in the scored file)."""

FACT_FINDINGS = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),
        pa.field("response_id", pa.string()),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("claim", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("expected", pa.string(), nullable=False),
    ],
    metadata={b"contract": b"fact_findings"},
)
"""FACT_CHECK flattened: one row per unsupported claim."""

RESPONSE_REVIEW = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("response", pa.string(), nullable=False),
        pa.field("provenance", pa.string(), nullable=False),
        pa.field("findings", pa.list_(FINDING_STRUCT), nullable=False),
    ],
    metadata={b"contract": b"response_review", b"key": b"prompt_id"},
)
"""Teacher responses kept out of training for unsupported claims, exported for a person to correct."""

RESPONSE_EVAL = pa.schema(
    [
        pa.field("eval_id", pa.string(), nullable=False),
        pa.field("slice", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("reference_response", pa.string(), nullable=False),
        pa.field("expected_action", pa.string(), nullable=False),
        pa.field("sku", pa.string()),
    ],
    metadata={b"contract": b"response_eval", b"key": b"eval_id"},
)
"""The fixed human-reviewed evaluation set: slice (RESPONSE_EVAL_SLICES), the reviewed reference answer and
the action it takes (RESPONSE_ACTIONS); `sku` is the catalog item a factuality question is about."""


# --- Response gate (Scenario 1): model answers, pairwise judgments, blinded human review ----------------

REVIEW_CHOICES = ("a", "b", "tie")
"""What a reviewer may answer for one blinded pair: answer A is better, answer B is better, or a tie."""

MODEL_ANSWERS = pa.schema(
    [
        pa.field("eval_id", pa.string(), nullable=False),
        pa.field("response", pa.string(), nullable=False),
        pa.field("completion_tokens", pa.int64()),
    ],
    metadata={b"contract": b"model_answers", b"key": b"eval_id"},
)
"""One model's answer to each evaluation prompt (RESPONSE_EVAL.eval_id), with its length in generated tokens."""

JUDGMENTS = pa.schema(
    [
        pa.field("eval_id", pa.string(), nullable=False),
        pa.field("order", pa.string(), nullable=False),
        pa.field("student_position", pa.string(), nullable=False),
        pa.field("winner", pa.string()),
        pa.field("student_at_least_as_good", pa.bool_()),
        pa.field("error", pa.string()),
        pa.field("judge_prompt_version", pa.string(), nullable=False),
    ],
    metadata={b"contract": b"judgments"},
)
"""One pairwise judge verdict: the order shown ("teacher_first" / "student_first"), where the student's answer
stood ("A" / "B"), the parsed winner ("A", "B", "tie"; null when the judgment failed, with `error` saying why)."""

REVIEW_PACKET = pa.schema(
    [
        pa.field("packet_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("answer_a", pa.string(), nullable=False),
        pa.field("answer_b", pa.string(), nullable=False),
    ],
    metadata={b"contract": b"review_packet", b"key": b"packet_id"},
)
"""A blinded A/B pair for a human reviewer: nothing in it says which model wrote which answer."""

REVIEW_KEY = pa.schema(
    [
        pa.field("packet_id", pa.string(), nullable=False),
        pa.field("eval_id", pa.string(), nullable=False),
        pa.field("slice", pa.string(), nullable=False),
        pa.field("model_a", pa.string(), nullable=False),
        pa.field("model_b", pa.string(), nullable=False),
    ],
    metadata={b"contract": b"review_key", b"key": b"packet_id"},
)
"""The unblinding key of a review packet, kept apart from it: which model ("student" / "base_student") is A."""

COMPLETED_REVIEWS = pa.schema(
    [
        pa.field("packet_id", pa.string(), nullable=False),
        pa.field("choice", pa.string(), nullable=False),
        pa.field("reviewer", pa.string()),
    ],
    metadata={b"contract": b"completed_reviews", b"key": b"packet_id,reviewer"},
)
"""A reviewer's verdict on one packet pair: choice is one of REVIEW_CHOICES (case and spaces ignored)."""
