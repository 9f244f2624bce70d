"""The failure modes of response distillation (failure, how it shows, the fix), each detected yes / no /
unknown from the measured metrics with its evidence figure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mangadistill.core.gates import GateDecision
from mangadistill.response.gate.judge import PROXY_METRIC

RARE_SLICE = "escalation"
"""The slice of rare behaviour (refusals and hand-offs): where dark knowledge would hurt first."""
FAILURE_MODES: dict[str, tuple[str, str]] = {
    "teacher hallucinations copied": ("student repeats wrong facts",
                                      "human filter and retrieval-grounded teacher prompts"),
    "student too small": ("high loss and weak eval", "increase size or use LoRA"),
    "dark knowledge hurts rare classes": ("rare recall drops", "blend hard labels and soft labels"),
    "cost win too small": ("serving cost barely changes", "quantize student or simplify architecture"),
}
"""Failure -> (detection, fix), as the project's design table states them."""



@dataclass(frozen=True)
class DiagnosticThresholds:
    """high_final_loss: mean token CE (nats) of the last 10% of training steps above which the student fits
    its data poorly; copied_share: share of the student's unsupported claims that repeat the teacher's."""

    high_final_loss: float = 1.0
    copied_share: float = 0.5


@dataclass(frozen=True)
class Diagnostic:
    failure: str
    detection: str
    detected: bool | None
    evidence: str
    figure: float | None
    fix: str

    def row(self) -> list[object]:
        verdict = {True: "yes", False: "no", None: "unknown"}[self.detected]
        return [self.failure, self.detection, verdict, self.evidence, self.figure, self.fix]


def final_train_loss(training_report: Mapping[str, Any]) -> float:
    """Mean of the last max(1, ceil(10%)) per-step token CE values (step_ce, else step_losses)."""
    values = list(training_report.get("step_ce") or training_report.get("step_losses") or [])
    if not values:
        return float("nan")
    tail = max(1, math.ceil(0.1 * len(values)))
    return float(np.mean(values[-tail:]))


def copied_findings(student_findings: Sequence[Sequence[Mapping]], teacher_findings: Sequence[Sequence[Mapping]]
                    ) -> tuple[int, int]:
    """(student findings that repeat a teacher finding on the same prompt, all student findings); a repeat has
    the same kind and title."""
    copied = total = 0
    for student, teacher in zip(student_findings, teacher_findings, strict=True):
        teacher_keys = {(f["kind"], f["title"]) for f in teacher}
        total += len(student)
        copied += sum((f["kind"], f["title"]) in teacher_keys for f in student)
    return copied, total


def _gate_result(decision: GateDecision, *metrics: str):
    return next((result for result in decision.results if result.metric in metrics), None)


def diagnose(metrics: Mapping[str, float | None], decision: GateDecision,
             thresholds: DiagnosticThresholds = DiagnosticThresholds()) -> list[Diagnostic]:
    """One Diagnostic per failure mode of FAILURE_MODES, from the measured metrics."""

    def make(failure: str, detected: bool | None, evidence: str, figure: float | None) -> Diagnostic:
        detection, fix = FAILURE_MODES[failure]
        return Diagnostic(failure, detection, detected, evidence,
                          None if figure is None or not math.isfinite(figure) else figure, fix)

    def value(name: str) -> float:
        raw = metrics.get(name)
        return float("nan") if raw is None else float(raw)

    out = []
    share, copied, total = (value("student_findings_copied_share"), value("student_findings_copied"),
                            value("student_findings"))
    if total > 0:
        out.append(make("teacher hallucinations copied", share >= thresholds.copied_share,
                        f"{copied:.0f} of the student's {total:.0f} unsupported claims repeat the teacher's on the "
                        f"same prompt (share {share:.2f}, threshold {thresholds.copied_share:g}); teacher "
                        f"hallucination rate {value('teacher_hallucination_rate'):.3f}", share))
    else:
        out.append(make("teacher hallucinations copied", False if total == 0 else None,
                        "the student made no unsupported claim on the evaluation set" if total == 0
                        else "not measured", 0.0 if total == 0 else None))

    loss = value("final_train_loss")
    preference = _gate_result(decision, "teacher_preference_match", PROXY_METRIC)
    weak = None if preference is None or preference.value is None or math.isnan(preference.value) \
        else not preference.passed
    if math.isnan(loss):
        detected, evidence = None, "no training report given"
    else:
        high = loss >= thresholds.high_final_loss
        detected = False if not high else weak
        eval_text = ("preference not measured" if weak is None else
                     f"{preference.metric} {preference.value:.3f} ({'below' if weak else 'meets'} "
                     f"{preference.threshold:g})")
        evidence = (f"final training loss {loss:.3f} nats/token ({'>=' if high else '<'} "
                    f"{thresholds.high_final_loss:g}); {eval_text}")
    out.append(make("student too small", detected, evidence, loss))

    delta = value(f"slice_{RARE_SLICE}_vs_base")
    out.append(make("dark knowledge hurts rare classes", None if math.isnan(delta) else delta < 0,
                    f"{RARE_SLICE} slice (refusals and hand-offs): student {value(f'slice_{RARE_SLICE}_score'):.3f} "
                    f"vs base student {value(f'base_slice_{RARE_SLICE}_score'):.3f} ({delta:+.3f})", delta))

    reduction = value("cost_reduction")
    gate = _gate_result(decision, "cost_reduction")
    needed = gate.threshold if gate is not None else 0.5
    out.append(make("cost win too small", None if math.isnan(reduction) else reduction < needed,
                    f"student ${value('student_cost_per_1k_usd'):.4g} vs teacher "
                    f"${value('teacher_cost_per_1k_usd'):.4g} per 1K responses: reduction {reduction:.3f} "
                    f"(needs >= {needed:g})", reduction))
    return out
