from types import SimpleNamespace

import numpy as np
import pytest

from mangadistill.core import benchmarking
from mangadistill.core.benchmarking import MIB, measure_latency, path_size_mb


class FakeClock:
    """A perf_counter whose time moves only when a predict call says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_batches_warmup_and_max_items() -> None:
    calls: list[list[str]] = []
    texts = [f"text {i}" for i in range(10)]

    result = measure_latency(calls.append, texts, batch_size=3, warmup=2, max_items=8)

    assert result["n"] == 3
    warmup_calls, timed_calls = calls[:2], calls[2:]
    assert warmup_calls == [texts[0:3], texts[3:6]]
    assert [len(batch) for batch in timed_calls] == [3, 3, 2]
    assert [text for batch in timed_calls for text in batch] == texts[:8]


def test_max_items_none_times_every_text() -> None:
    calls: list[list[str]] = []
    result = measure_latency(calls.append, ["a", "b", "c"], batch_size=1, warmup=0, max_items=None)
    assert result["n"] == 3
    assert calls == [["a"], ["b"], ["c"]]


def test_percentiles_are_of_per_call_wall_times(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(benchmarking, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    seconds_per_text = {f"t{i}": 0.001 * (i + 1) for i in range(40)}
    seconds_per_text["t39"] = 0.5

    def predict(batch: list[str]) -> None:
        clock.now += sum(seconds_per_text[text] for text in batch)

    result = measure_latency(predict, list(seconds_per_text), batch_size=1, warmup=3)

    call_ms = np.array(list(seconds_per_text.values())) * 1e3
    assert result["n"] == 40
    assert result["p50_ms"] == pytest.approx(np.percentile(call_ms, 50))
    assert result["p95_ms"] == pytest.approx(np.percentile(call_ms, 95))
    assert result["mean_ms"] == pytest.approx(call_ms.mean())
    assert result["p50_ms"] < result["p95_ms"]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one text"):
        measure_latency(lambda batch: None, [])
    with pytest.raises(ValueError, match="batch_size"):
        measure_latency(lambda batch: None, ["a"], batch_size=0)


def test_path_size_mb_of_a_file_and_a_folder(tmp_path) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"\0" * (3 * MIB // 2))
    (tmp_path / "nested" / "extra.bin").write_bytes(b"\0" * (MIB // 4))

    assert path_size_mb(str(tmp_path / "weights.bin")) == pytest.approx(1.5)
    assert path_size_mb(str(tmp_path)) == pytest.approx(1.75)
    with pytest.raises(FileNotFoundError, match="missing"):
        path_size_mb(str(tmp_path / "missing"))


def test_torch_threads_sets_and_restores_even_on_error():
    import torch

    from mangadistill.core.benchmarking import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    try:
        with torch_threads(1):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before


def test_weights_size_counts_only_safetensors_files(tmp_path):
    from mangadistill.core.benchmarking import MIB, weights_size_mb

    assert weights_size_mb(str(tmp_path)) == 0
    (tmp_path / "model.safetensors").write_bytes(b"\0" * MIB)
    (tmp_path / "tokenizer.json").write_bytes(b"\0" * MIB)
    assert weights_size_mb(str(tmp_path)) == 1.0
