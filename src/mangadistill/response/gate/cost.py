"""Serving cost per 1K responses: hourly machine prices (resources/serving_hardware.yaml), measured throughput
and recorded API cost, and the cost reduction of student against teacher."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
import yaml

from mangadistill.core import storage


@dataclass(frozen=True)
class ServingHardware:
    """Machines and their hourly prices (resources/serving_hardware.yaml)."""

    version: str
    currency: str
    usd_per_hour: dict[str, float]
    source: str

    @classmethod
    def load(cls, uri: str | None = None) -> ServingHardware:
        if uri:
            text, source = storage.read_text(uri), uri
        else:
            text = resources.files("mangadistill.resources").joinpath("serving_hardware.yaml").read_text("utf-8")
            source = "mangadistill/resources/serving_hardware.yaml"
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


def served_tokens_per_second(quantization_report_uri: str, served_model: str) -> float:
    """tokens_per_second of `served_model` ("baseline", "int8", "nf4") in a response_quantization report."""
    report = json.loads(storage.read_text(quantization_report_uri))
    models = report.get("models", {})
    if served_model not in models:
        raise KeyError(f"{quantization_report_uri}: no model {served_model!r}; found {sorted(models)}")
    return float(models[served_model]["tokens_per_second"])
