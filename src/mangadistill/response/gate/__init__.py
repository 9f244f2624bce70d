"""Evaluate a response student against the response promotion gates and decide whether it is promoted.

Inputs are the fixed human-reviewed evaluation set (contracts.RESPONSE_EVAL: slices policy, escalation,
factuality, general) and, for every eval prompt, the answers of the student, of the base student (the untrained
student model) and of the teacher (contracts.TEACHER_RESPONSES, prompt_id = eval_id, with the cost the teacher
recorded). Metrics, by the names the gates YAML uses (resources/response_gates.yaml):

- teacher_preference_match (judge.py): a pairwise LLM judge through the OpenAI-compatible API sees each prompt
  twice, (A = teacher, B = student) and (A = student, B = teacher). A judgment is a strict JSON object
  {"winner": "A" | "B" | "tie"}. match = (number of judgments in which the student's answer won or tied) /
  (2 × prompts): the mean over prompts of the mean over the two orders, so a judge that always picks position
  A scores exactly 0.5 and position bias cancels. A judgment that fails (unparseable after the client's
  retries, or no answer) counts as not a match and is reported (judge_failed_judgments,
  judge_unparseable_judgments); nothing is dropped. With guided choice (a judge served by vLLM or by
  `mangadistill serve-teacher`) the judge can only answer one of JUDGE_CHOICES, so no judgment is unparseable.
- teacher_preference_match_proxy (judge.py): only when no judge is given and a proxy model is: the share of
  prompts whose student answer has cosine similarity >= PROXY_SIMILARITY_THRESHOLD to the teacher's answer
  (sentence embeddings, builtin "minilm-l6"). It is a different metric under a different name: the packaged
  gate on teacher_preference_match then fails as missing, unless the gates file gates the proxy metric instead.
- human_win_rate (review.py): from completed blinded A/B reviews (student vs base student; see
  `build_review_packet`): (student wins + ties / 2) / valid reviews. Every packet must have at least one valid
  review; otherwise the metric is missing and its gate fails with "awaiting human review".
- hallucination_rate: share of the student's eval answers with at least one unsupported catalog claim
  (`factcheck.check_responses` against the catalog the caller passes).
- cost_reduction (cost.py) = 1 − student cost per 1K / teacher cost per 1K, where student cost per 1K =
  hardware USD per hour / (median tokens per second × 3600 / mean response tokens) × 1000 (the mean completion
  tokens of its eval answers, the hourly price from resources/serving_hardware.yaml), and teacher cost per 1K
  = mean recorded cost per teacher answer × 1000 for a managed API, or, for a self-hosted teacher, the same
  throughput formula on its hardware. The throughputs are measured side by side in the gate's task
  (`measure_side_by_side`: the same prompts, a warm-up each, then rounds taking teacher and student in turn);
  cost_reduction_spread is max − min of the reduction computed round by round. An unmeasured or NaN
  throughput leaves cost_reduction NaN, and its gate fails.
- slice_<slice>_score (slices.py): share of the slice's rows whose answer passes the slice check
  (`slice_check`); slice_<slice>_vs_base = student score − base student score, gated >= 0 (no slice may
  regress).

Diagnostics (diagnostics.py) name each failure mode of FAILURE_MODES with detected yes / no / unknown, the
evidence figure and the fix; decision.py runs the gate, report.py writes its HTML report.
"""

from mangadistill.response.gate.cost import (
    ServingHardware,
    SideBySideThroughput,
    cost_reduction,
    measure_side_by_side,
    recorded_cost_per_1k,
    self_hosted_cost_per_1k,
    serving_cost,
)
from mangadistill.response.gate.decision import (
    EVENT_COST_FIELDS,
    EVENT_METRICS,
    ResponseGateConfig,
    ResponseGateOutcome,
    answer_eval_prompts,
    evaluate_response_student,
    run_response_gate,
)
from mangadistill.response.gate.diagnostics import FAILURE_MODES, DiagnosticThresholds
from mangadistill.response.gate.judge import (
    JUDGE_CHOICES,
    JUDGE_ORDERS,
    PROXY_METRIC,
    UNPARSEABLE,
    CachedJudge,
    ChatBackend,
    judge_preference,
    load_judge_prompt,
    parse_judgment,
)
from mangadistill.response.gate.review import build_review_packet, score_human_reviews
from mangadistill.response.gate.slices import detect_action, slice_check

__all__ = [
    "EVENT_COST_FIELDS",
    "EVENT_METRICS",
    "FAILURE_MODES",
    "JUDGE_CHOICES",
    "JUDGE_ORDERS",
    "PROXY_METRIC",
    "UNPARSEABLE",
    "CachedJudge",
    "ChatBackend",
    "DiagnosticThresholds",
    "ResponseGateConfig",
    "ResponseGateOutcome",
    "ServingHardware",
    "SideBySideThroughput",
    "answer_eval_prompts",
    "build_review_packet",
    "cost_reduction",
    "detect_action",
    "evaluate_response_student",
    "judge_preference",
    "load_judge_prompt",
    "measure_side_by_side",
    "parse_judgment",
    "recorded_cost_per_1k",
    "run_response_gate",
    "score_human_reviews",
    "self_hosted_cost_per_1k",
    "serving_cost",
    "slice_check",
]
