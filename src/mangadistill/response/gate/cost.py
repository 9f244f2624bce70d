"""Serving cost per 1K responses: hourly machine prices (resources/serving_hardware.yaml), teacher and student
throughput measured side by side in one task (`measure_side_by_side`), recorded API cost, and the cost
reduction of student against teacher with its spread over the measurement's rounds (`serving_cost`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import yaml

from mangadistill.core import storage

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ServingHardware:
    """Machines and their hourly prices (resources/serving_hardware.yaml)."""

    version: str
    currency: str
    usd_per_hour: dict[str, float]
    source: str

    @classmethod
    def load(cls, uri: str | None = None) -> ServingHardware:
        text, source = storage.read_text_or_resource(uri, "serving_hardware.yaml")
        document = yaml.safe_load(text)
        machines = document.get("machines") if isinstance(document, dict) else None
        if not isinstance(machines, dict) or not document.get("version"):
            raise ValueError(f"{source}: a hardware price table needs 'version' and a 'machines' mapping")
        prices = {}
        for name, entry in machines.items():
            price = entry.get("usd_per_hour") if isinstance(entry, dict) else None
            if isinstance(price, bool) or not isinstance(price, int | float) or not price > 0 or math.isinf(price):
                raise ValueError(f"{source}: machine {name!r} needs a positive, finite 'usd_per_hour'")
            prices[str(name)] = float(price)
        return cls(str(document["version"]), str(document.get("currency", "USD")), prices, source)

    def price(self, machine: str) -> float:
        if machine not in self.usd_per_hour:
            raise KeyError(f"{self.source} (version {self.version}) has no machine {machine!r}; "
                           f"known: {sorted(self.usd_per_hour)}")
        return self.usd_per_hour[machine]


def self_hosted_cost_per_1k(usd_per_hour: float, tokens_per_second: float, mean_response_tokens: float) -> float:
    """USD per 1K responses = usd_per_hour / (tokens_per_second × 3600 / mean_response_tokens) × 1000."""
    for name, value in (("usd_per_hour", usd_per_hour), ("tokens_per_second", tokens_per_second),
                        ("mean_response_tokens", mean_response_tokens)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"self_hosted_cost_per_1k: {name} must be a positive number, got {value!r}")
    responses_per_hour = tokens_per_second * 3600.0 / mean_response_tokens
    return usd_per_hour / responses_per_hour * 1000.0


def recorded_cost_per_1k(costs_usd: Sequence[float]) -> float:
    """Mean recorded cost per response × 1000 (NaN for no rows)."""
    return float(np.mean(costs_usd)) * 1000.0 if len(costs_usd) else float("nan")


def cost_reduction(student_per_1k: float | None, teacher_per_1k: float | None) -> float:
    """1 − student / teacher; NaN when either is unknown or the teacher's cost is not positive."""
    if student_per_1k is None or teacher_per_1k is None or not teacher_per_1k > 0 or math.isinf(teacher_per_1k):
        return float("nan")
    return 1.0 - student_per_1k / teacher_per_1k


@dataclass(frozen=True)
class SideBySideThroughput:
    """Generation throughput of each model ("teacher", "student") measured in one task: tokens_per_second[name]
    holds one figure per round, rounds taken back to back for every model (`measure_side_by_side`)."""

    tokens_per_second: Mapping[str, tuple[float, ...]]
    prompts: int
    max_new_tokens: int
    device: str

    @property
    def repeats(self) -> int:
        return min(map(len, self.tokens_per_second.values()), default=0)

    def summary(self, name: str) -> tuple[float, float, float]:
        """(median, min, max) tokens per second of `name` over the rounds; NaN for a model not measured."""
        values = self.tokens_per_second.get(name, ())
        if not values:
            return (float("nan"),) * 3
        return float(np.median(values)), float(min(values)), float(max(values))


def measure_side_by_side(
    models: Mapping[str, tuple[PreTrainedModel, PreTrainedTokenizerBase]], prompts: Sequence[str],
    max_new_tokens: int = 32, repeats: int = 3, system_prompt: str | None = None,
) -> SideBySideThroughput:
    """Every model's tokens per second on the same prompts, at the same moment, on this machine.

    `repeats` rounds; a round runs every prompt through every model in turn (two models: teacher p1, student
    p1, teacher p2, ...), so a change in machine load, even within a round, hits every model alike; each
    model's first call warms it up with one untimed generation right before its first timed one. A model's
    figure for a round = its new tokens / its generate wall time over the round's prompts; one call is
    `quantization.generation_throughput` (greedy, batch 1, exactly max_new_tokens new tokens).
    """
    from mangadistill.response.quantization import generation_throughput

    if repeats < 1 or not prompts:
        raise ValueError(f"measure_side_by_side needs repeats >= 1 and prompts; got {repeats} and {len(prompts)}")
    figures: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(repeats):
        tokens, seconds = dict.fromkeys(models, 0), dict.fromkeys(models, 0.0)
        for prompt_index, prompt in enumerate(prompts):
            for name, (model, tokenizer) in models.items():
                measured = generation_throughput(model, tokenizer, [prompt], max_new_tokens, system_prompt,
                                                 warmup=round_index == prompt_index == 0)
                tokens[name] += measured["new_tokens"]
                seconds[name] += measured["seconds"]
        for name in models:
            figures[name].append(tokens[name] / seconds[name])
    device = str(next(iter(models.values()))[0].device) if models else "none"
    return SideBySideThroughput({name: tuple(values) for name, values in figures.items()}, len(prompts),
                                max_new_tokens, device)


def _priced(usd_per_hour: float | None, tokens_per_second: float | None,
            mean_response_tokens: float | None) -> float | None:
    """self_hosted_cost_per_1k, or None when a figure is missing, NaN or not positive."""
    figures = (usd_per_hour, tokens_per_second, mean_response_tokens)
    if any(value is None or not math.isfinite(value) or not value > 0 for value in figures):
        return None
    return self_hosted_cost_per_1k(*figures)


def serving_cost(
    throughput: SideBySideThroughput | None, student_usd_per_hour: float | None,
    teacher_usd_per_hour: float | None, student_mean_tokens: float | None, teacher_mean_tokens: float,
    teacher_recorded_costs: Sequence[float],
) -> dict[str, float | None]:
    """The cost metrics of one side-by-side measurement.

    cost_<model>_tokens_per_s_{median,min,max} over the rounds (None: not measured); <model>_cost_per_1k_usd =
    self_hosted_cost_per_1k(<model>_usd_per_hour, median tokens/s, mean response tokens) for each measured
    model, while a teacher not measured (a managed API) costs its mean recorded cost × 1000; cost_reduction =
    1 − student / teacher from those; cost_reduction_spread = max − min of the same reduction computed round by
    round (each round's student and teacher figures, taken back to back). A missing or NaN figure leaves its
    cost None and cost_reduction NaN, which fails the gate.
    """
    rounds = throughput.tokens_per_second if throughput else {}
    metrics: dict[str, float | None] = {
        "cost_repeats": float(throughput.repeats) if throughput else None,
        "cost_prompts": float(throughput.prompts) if throughput else None,
        "cost_max_new_tokens": float(throughput.max_new_tokens) if throughput else None,
    }
    for name in ("student", "teacher"):
        median, low, high = throughput.summary(name) if name in rounds else (None, None, None)
        metrics.update({f"cost_{name}_tokens_per_s_median": median, f"cost_{name}_tokens_per_s_min": low,
                        f"cost_{name}_tokens_per_s_max": high})
    metrics["student_cost_per_1k_usd"] = _priced(student_usd_per_hour, metrics["cost_student_tokens_per_s_median"],
                                                 student_mean_tokens)
    student_rounds = [_priced(student_usd_per_hour, value, student_mean_tokens) for value in rounds.get("student", ())]
    if "teacher" in rounds:
        metrics["teacher_cost_per_1k_usd"] = _priced(
            teacher_usd_per_hour, metrics["cost_teacher_tokens_per_s_median"], teacher_mean_tokens)
        teacher_rounds = [_priced(teacher_usd_per_hour, value, teacher_mean_tokens) for value in rounds["teacher"]]
    else:
        metrics["teacher_cost_per_1k_usd"] = recorded_cost_per_1k(teacher_recorded_costs)
        teacher_rounds = [metrics["teacher_cost_per_1k_usd"]] * len(student_rounds)
    metrics["cost_reduction"] = cost_reduction(metrics["student_cost_per_1k_usd"], metrics["teacher_cost_per_1k_usd"])
    reductions = [cost_reduction(student, teacher) for student, teacher in zip(student_rounds, teacher_rounds,
                                                                                 strict=False)]
    metrics["cost_reduction_spread"] = (max(reductions) - min(reductions)
                                        if reductions and all(map(math.isfinite, reductions)) else float("nan"))
    return metrics
