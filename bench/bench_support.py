"""What every bench script shares: the target check and the facts of the machine a result was measured on."""

from __future__ import annotations

import os
import platform

import torch

OPERATORS = {">=": float.__ge__, ">": float.__gt__, "<=": float.__le__}


def passes(value: float | None, op: str, target: float) -> bool:
    """`value op target` for op in OPERATORS; a missing value never passes."""
    return value is not None and OPERATORS[op](float(value), float(target))


def machine_facts() -> dict[str, object]:
    """CPU count, torch threads, processor, Python and the 1-minute load average at the time of the call."""
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "load_average_1m": os.getloadavg()[0]}
