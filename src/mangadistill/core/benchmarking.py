"""Latency and size measurements shared by every stage that reports serving cost.

Latency is the wall time of one `predict` call (`time.perf_counter`) over consecutive batches of
`batch_size` texts, after `warmup` untimed calls; p50/p95 are `numpy.percentile` of those call times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

MIB = 2**20


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with `threads` intra-op torch threads, then restore the previous setting.

    Latency is compared at one thread count for every model: torch's default (one per host core) stalls
    badly on shared cores, and CPU/mobile serving usually runs one thread per request.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure_latency(
    predict: Callable[[list[str]], object],
    texts: Sequence[str],
    batch_size: int = 1,
    warmup: int = 5,
    max_items: int | None = 200,
) -> dict:
    """Time `predict` per call on batches of the first `max_items` texts (all when None).

    Warm-up calls cycle through the same batches and are not timed. Returns
    {"p50_ms", "p95_ms", "mean_ms", "n"}, where n is the number of timed calls.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    items = list(texts if max_items is None else texts[:max_items])
    if not items:
        raise ValueError("measure_latency needs at least one text")
    batches = [items[start : start + batch_size] for start in range(0, len(items), batch_size)]
    for call in range(warmup):
        predict(batches[call % len(batches)])
    call_ms = []
    for batch in batches:
        start = time.perf_counter()
        predict(batch)
        call_ms.append((time.perf_counter() - start) * 1e3)
    return {
        "p50_ms": float(np.percentile(call_ms, 50)),
        "p95_ms": float(np.percentile(call_ms, 95)),
        "mean_ms": float(np.mean(call_ms)),
        "n": len(call_ms),
    }


def path_size_mb(path: str) -> float:
    """Size in MiB (2**20 bytes) of a file, or of all files under a folder."""
    if os.path.isfile(path):
        return os.path.getsize(path) / MIB
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no such file or folder: {path}")
    total_bytes = sum(
        os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names
    )
    return total_bytes / MIB


def weights_size_mb(model_dir: str) -> float:
    """Total MiB of the *.safetensors weight files in `model_dir` (0 when it has none)."""
    return sum(path_size_mb(str(path)) for path in Path(model_dir).glob("*.safetensors"))
