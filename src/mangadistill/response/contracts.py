"""Response contracts: prompts, teacher answers, training examples, fact checks, the evaluation set,
model answers, judgments and the blinded human review."""

from __future__ import annotations

import pyarrow as pa

from mangadistill.core.contracts import nonempty_text, nonnegative_number, register_row_checks

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


RESPONSE_SOURCES = ("teacher", "human_corrected", "refusal_escalation")
"""Where a training response came from: a teacher answer to a production prompt, an answer a person fixed,
or a refusal/escalation example."""
RESPONSE_EVAL_SLICES = ("policy", "escalation", "factuality", "general")
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


REVIEW_CHOICES = ("a", "b", "tie", "both_bad")
"""What a reviewer may answer for one blinded pair: answer A is better, answer B is better, a tie, or both
answers are bad (neither model preferred: scored as a tie, counted apart)."""

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


register_row_checks(TEACHER_RESPONSES, {
    "prompt": nonempty_text, "response": nonempty_text, "prompt_tokens": nonnegative_number,
    "completion_tokens": nonnegative_number, "cost_usd": nonnegative_number, "latency_s": nonnegative_number,
})
register_row_checks(RESPONSE_PROMPTS, {"prompt": nonempty_text})
register_row_checks(PREPARED_PROMPTS, {"prompt": nonempty_text})
register_row_checks(RESPONSE_EXAMPLES, {"prompt": nonempty_text, "response": nonempty_text})
register_row_checks(RESPONSE_REVIEW, {"prompt": nonempty_text, "response": nonempty_text})
def _eval_slice_check(value: object) -> str | None:
    return None if value in RESPONSE_EVAL_SLICES else f"unknown slice; expected {RESPONSE_EVAL_SLICES}"


register_row_checks(RESPONSE_EVAL, {"prompt": nonempty_text, "reference_response": nonempty_text,
                                    "slice": _eval_slice_check})
register_row_checks(MODEL_ANSWERS, {"completion_tokens": nonnegative_number})
