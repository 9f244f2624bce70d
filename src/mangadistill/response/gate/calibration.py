"""Check the pairwise judge before trusting it: its verdicts on answer pairs a person already judged.

The packaged set (resources/judge_calibration.jsonl, resources/HANDWRITTEN_RESPONSE.md) holds 47 prompts with two
answers each and a human preference a / b / tie, some with the better answer second and some differing only in
a catalog fact. The judge sees every pair in both orders (`judge.judge_preference`, answer_a in the teacher's
seat, answer_b in the student's). Its choice for a pair: the answer it prefers in both orders; "tie" when it
says tie in both or flips with the order (it cannot tell them apart); "failed" when no judgment parsed. Figures:

- judge_calibration_kappa: Cohen's κ = (p_o − p_e) / (1 − p_e) between the human's and the judge's choices
  (p_o agreement, p_e = Σ_k p_human(k)·p_judge(k) over a, b, tie, failed); 0 is chance, 1 perfect
- judge_calibration_agreement = p_o; judge_calibration_order_consistency = share of pairs with the same
  answer preferred (or tie) in both orders; judge_calibration_position_a_share = share of parsed judgments
  naming position A; judge_calibration_pairs, judge_calibration_failed_judgments

The gates YAML decides whether the judge is trusted: its gates on judge_calibration_* metrics; while any fails,
teacher_preference_match is withheld (missing, so its gate fails with "judge unreliable: κ=...").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError
from mangadistill.core.gates import Gate, evaluate_gates
from mangadistill.response.gate.judge import ChatBackend, JudgePrompt, judge_preference

JUDGE_CALIBRATION_FILE = "judge_calibration.jsonl"
PREFERENCES = ("a", "b", "tie")
CALIBRATION_PREFIX = "judge_calibration_"


@dataclass(frozen=True)
class CalibrationPair:
    """One hand-judged pair: the prompt, two answers and the person's preference (a, b or tie)."""

    pair_id: str
    prompt: str
    answer_a: str
    answer_b: str
    preferred: str


def load_judge_calibration(uri: str = "") -> list[CalibrationPair]:
    """The packaged set (uri empty) or a JSONL of the same shape, one pair per line: {"pair_id", "prompt",
    "answer_a", "answer_b", "preferred": "a"|"b"|"tie"}; DataContractError naming the file, the field and the
    line of the first bad entry."""
    source, entries = storage.jsonl_entries(uri, JUDGE_CALIBRATION_FILE,
                                            lambda src, line, problem: DataContractError(src, None, line, problem))
    pairs, seen = [], set()
    for line, entry in entries:
        if not isinstance(entry, dict):
            raise DataContractError(source, None, line, "not a JSON object")
        for name in ("pair_id", "prompt", "answer_a", "answer_b"):
            if not isinstance(entry.get(name), str) or not entry[name].strip():
                raise DataContractError(source, name, line, "missing or empty text")
        if entry.get("preferred") not in PREFERENCES:
            raise DataContractError(source, "preferred", line,
                                    f"{entry.get('preferred')!r} is not one of {PREFERENCES}")
        if entry["pair_id"] in seen:
            raise DataContractError(source, "pair_id", line, f"{entry['pair_id']!r} repeats")
        seen.add(entry["pair_id"])
        pairs.append(CalibrationPair(entry["pair_id"], entry["prompt"], entry["answer_a"], entry["answer_b"],
                                     entry["preferred"]))
    if not pairs:
        raise DataContractError(source, None, None, "no pairs")
    return pairs


def cohens_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """κ = (p_o − p_e) / (1 − p_e) of two raters' labels for the same items; NaN when there are none, 1.0 when
    both use one and the same label throughout (p_e = 1)."""
    if len(first) != len(second):
        raise ValueError(f"cohens_kappa: {len(first)} and {len(second)} labels")
    if not first:
        return float("nan")
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    counts_first, counts_second = Counter(first), Counter(second)
    expected = sum(counts_first[label] * counts_second[label] for label in counts_first) / (n * n)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


@dataclass(frozen=True)
class JudgeCalibration:
    """The judge's judgments of the hand-judged pairs; its choice per pair and the figures (module docstring)."""

    pairs: list[CalibrationPair]
    judgments: list[dict]

    @cached_property
    def answers(self) -> list[list[str]]:
        """Per pair, the answer (a, b or tie) each of its parsed judgments chose."""
        chosen: dict[str, list[str]] = {pair.pair_id: [] for pair in self.pairs}
        for judgment in self.judgments:
            if judgment["winner"] is not None:
                chosen[judgment["eval_id"]].append(_answer_chosen(judgment))
        return [chosen[pair.pair_id] for pair in self.pairs]

    @property
    def choices(self) -> list[str]:
        """Per pair: the answer chosen in every parsed order, "tie" when the orders disagree, "failed" if none."""
        return [("failed" if not answers else answers[0] if len(set(answers)) == 1 else "tie")
                for answers in self.answers]

    def metrics(self) -> dict[str, float]:
        parsed = [j for j in self.judgments if j["winner"] is not None]
        both_orders = [answers for answers in self.answers if len(answers) == 2]
        human = [pair.preferred for pair in self.pairs]
        choices = self.choices
        return {
            f"{CALIBRATION_PREFIX}pairs": float(len(self.pairs)),
            f"{CALIBRATION_PREFIX}kappa": cohens_kappa(human, choices),
            f"{CALIBRATION_PREFIX}agreement": sum(h == c for h, c in zip(human, choices, strict=True)) / len(human),
            f"{CALIBRATION_PREFIX}order_consistency": (sum(a == b for a, b in both_orders) / len(both_orders)
                                                       if both_orders else float("nan")),
            f"{CALIBRATION_PREFIX}position_a_share": (sum(j["winner"] == "A" for j in parsed) / len(parsed)
                                                      if parsed else float("nan")),
            f"{CALIBRATION_PREFIX}failed_judgments": float(len(self.judgments) - len(parsed)),
        }


def _answer_chosen(judgment: dict) -> str:
    """a, b or tie for one judgment in which answer_b sat in the student's seat."""
    if judgment["winner"] == "tie":
        return "tie"
    return "b" if judgment["winner"] == judgment["student_position"] else "a"


def calibrate_judge(judge: ChatBackend, pairs: Sequence[CalibrationPair], judge_prompt: JudgePrompt | None = None,
                    guided_choice: bool = False) -> JudgeCalibration:
    """Ask `judge` about every pair in both orders (`judge.judge_preference`, answer_b in the student's seat)."""
    pairs = list(pairs)
    result = judge_preference(judge, [p.pair_id for p in pairs], [p.prompt for p in pairs],
                              [p.answer_a for p in pairs], [p.answer_b for p in pairs], judge_prompt,
                              guided_choice=guided_choice)
    return JudgeCalibration(pairs, result.judgments)


def judge_trusted(gates: Sequence[Gate], metrics: dict[str, float]) -> tuple[bool, str]:
    """(every gate on a judge_calibration_* metric passes, the reason "judge unreliable: κ=..." when not)."""
    judge_gates = [gate for gate in gates if gate.metric.startswith(CALIBRATION_PREFIX)]
    decision = evaluate_gates(judge_gates, metrics) if judge_gates else None
    if decision is None or decision.promote:
        return True, ""
    failed = "; ".join(f"{result.metric.removeprefix(CALIBRATION_PREFIX)} {result.reason}"
                       for result in decision.results if not result.passed)
    kappa = metrics.get(f"{CALIBRATION_PREFIX}kappa")
    shown = f"{kappa:.2f}" if isinstance(kappa, float) else "n/a"
    pairs = int(metrics.get(f"{CALIBRATION_PREFIX}pairs") or 0)
    return False, f"judge unreliable: κ={shown} on {pairs} hand-judged pairs ({failed})"
