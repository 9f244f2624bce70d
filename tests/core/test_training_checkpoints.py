"""core.training checkpoints on real files: weights-only loading, the run fingerprint, the fallback state."""

from __future__ import annotations

import logging
import os
import pickle
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from mangadistill.core import storage
from mangadistill.core.training import (
    RUN_FOLDER_DIGITS,
    CheckpointMismatchError,
    latest_checkpoint,
    open_run_checkpoints,
    restore_checkpoint,
    restore_rng,
    rng_state,
    run_fingerprint,
    write_checkpoint,
)

RUN = "a" * 64


class Planted:
    """What an attacker with write access to the checkpoint volume saves: unpickling it runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _trainer(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, optimizer, get_linear_schedule_with_warmup(optimizer, 1, 10)


def _step(model, optimizer, scheduler) -> None:
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_planted_pickle_is_refused_and_its_payload_never_runs(tmp_path, caplog):
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "ckpt" / "epoch-7"
    folder.mkdir(parents=True)
    (folder / "fingerprint").write_text(RUN)  # the attacker may know the run: the fingerprint is no defence
    torch.save({"model": Planted(marker), "epoch": 7, "losses": []}, folder / "state.pt")
    pickle.loads(pickle.dumps(Planted(tmp_path / "unsafe-load")))  # the plant is real: an unsafe load runs it
    assert (tmp_path / "unsafe-load").exists()

    model, optimizer, scheduler = _trainer()
    with caplog.at_level(logging.WARNING):
        assert restore_checkpoint(folder, model, optimizer, scheduler, "cpu", RUN) == (0, [])
    assert not marker.exists()
    assert "not weights only" in caplog.text and "training from the start" in caplog.text
    write_checkpoint(tmp_path / "ckpt", 1, model, optimizer, scheduler, [0.5], RUN)  # the fresh run's own
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["epoch-1"]


def test_another_runs_checkpoint_is_refused_before_anything_is_loaded(tmp_path):
    root = tmp_path / "ckpt"
    model, optimizer, scheduler = _trainer()
    write_checkpoint(root, 1, model, optimizer, scheduler, [0.5], RUN)
    (root / "epoch-1" / "state.pt").write_bytes(b"not loaded")  # never read: the fingerprint is checked first
    with pytest.raises(CheckpointMismatchError, match="written by another run"):
        restore_checkpoint(root / "epoch-1", model, optimizer, scheduler, "cpu", "b" * 64)
    (root / "epoch-1" / "fingerprint").unlink()  # a folder from before fingerprints: not this run's either
    with pytest.raises(CheckpointMismatchError, match="fingerprint missing"):
        restore_checkpoint(root / "epoch-1", model, optimizer, scheduler, "cpu", RUN)


def test_the_fingerprint_follows_the_config_and_the_data():
    @dataclass
    class Config:
        seed: int = 1
        epochs: int = 2

    rows, soft = ["hello", "refund please"], np.array([[0.7, 0.3], [0.1, 0.9]], dtype=np.float32)
    same = run_fingerprint(Config(), "base", rows, soft)
    assert same == run_fingerprint(Config(), "base", list(rows), soft.copy())
    others = [
        run_fingerprint(replace(Config(), seed=2), "base", rows, soft),
        run_fingerprint(replace(Config(), epochs=3), "base", rows, soft),
        run_fingerprint(Config(), "other-base", rows, soft),
        run_fingerprint(Config(), "base", ["hello", "refund, please"], soft),
        run_fingerprint(Config(), "base", rows, soft[::-1]),
        run_fingerprint(Config(), "base", rows, None),
    ]
    assert len({same, *others}) == 7


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_state(tmp_path, caplog):
    root = tmp_path / "ckpt"
    model, optimizer, scheduler = _trainer()
    _step(model, optimizer, scheduler)
    write_checkpoint(root, 1, model, optimizer, scheduler, [0.9], RUN)
    after_one = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    _step(model, optimizer, scheduler)
    write_checkpoint(root, 2, model, optimizer, scheduler, [0.9, 0.8], RUN)
    newest = latest_checkpoint(root)
    assert newest.name == "epoch-2" and sorted(p.name for p in newest.iterdir()) == [
        "fallback.pt", "fingerprint", "state.pt"]
    state = newest / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a torn write on a network volume

    resumed, optimizer, scheduler = _trainer(seed=1)
    with caplog.at_level(logging.WARNING):
        assert restore_checkpoint(newest, resumed, optimizer, scheduler, "cpu", RUN) == (1, [0.9])
    assert "resuming from the fallback" in caplog.text and str(state) in caplog.text
    for name, tensor in resumed.state_dict().items():
        torch.testing.assert_close(tensor, after_one[name])
    # the resumed run writes epoch 2 again; epoch 1 stays its fallback
    _step(resumed, optimizer, scheduler)
    write_checkpoint(root, 2, resumed, optimizer, scheduler, [0.9, 0.7], RUN)
    (newest / "state.pt").write_bytes(b"")
    assert restore_checkpoint(newest, *_trainer(), "cpu", RUN) == (1, [0.9])
    (newest / "fallback.pt").write_bytes(b"garbage")
    assert restore_checkpoint(newest, *_trainer(), "cpu", RUN) == (0, [])


def _save_epochs(checkpoints, epochs: int) -> None:
    model, optimizer, scheduler = _trainer()
    for epoch in range(1, epochs + 1):
        _step(model, optimizer, scheduler)
        write_checkpoint(checkpoints.path, epoch, model, optimizer, scheduler, [0.1] * epoch, RUN)
        checkpoints.saved()


def test_a_local_root_gives_each_run_its_own_folder(tmp_path):
    checkpoints = open_run_checkpoints(str(tmp_path / "root"), RUN)
    assert checkpoints.path == tmp_path / "root" / RUN[:RUN_FOLDER_DIGITS] and checkpoints.remote is None
    _save_epochs(checkpoints, 2)
    assert latest_checkpoint(tmp_path / "root" / RUN[:RUN_FOLDER_DIGITS]).name == "epoch-2"
    assert open_run_checkpoints(str(tmp_path / "root"), "b" * 64).path.name == "b" * RUN_FOLDER_DIGITS
    assert open_run_checkpoints("", RUN) is None


def test_an_unsupported_scheme_trains_without_checkpoints_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        assert open_run_checkpoints("minio://mlpipeline/v2/artifacts/checkpoints/training", RUN) is None
    assert "resumable training checkpoints needs a local folder or gs://" in caplog.text


def test_a_gcs_root_is_mirrored_after_every_save_and_resumed_by_a_fresh_process(tmp_path, gcs_bucket):
    root = f"gs://{gcs_bucket}/pipeline-root/checkpoints/training"
    remote = f"{root}/{RUN[:RUN_FOLDER_DIGITS]}"
    first = open_run_checkpoints(root, RUN)
    assert first.remote == remote and not list(first.path.iterdir())  # nothing to resume yet
    _save_epochs(first, 2)
    assert storage.list_uris(remote + "/") == [f"{remote}/epoch-2/{name}"
                                              for name in ("fallback.pt", "fingerprint", "state.pt")]
    storage.write_bytes(f"{remote}/epoch-3/state.pt", b"torn")  # killed mid-upload: no fingerprint yet

    resumed = open_run_checkpoints(root, RUN)  # a retried pod: an empty disk
    assert resumed.path != first.path and latest_checkpoint(resumed.path).name == "epoch-2"
    saved = torch.load(latest_checkpoint(first.path) / "state.pt", weights_only=True)["model"]
    model, optimizer, scheduler = _trainer(seed=1)
    assert restore_checkpoint(latest_checkpoint(resumed.path), model, optimizer, scheduler, "cpu", RUN)[0] == 2
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name])
    write_checkpoint(resumed.path, 3, model, optimizer, scheduler, [0.1] * 3, RUN)
    resumed.saved()
    assert sorted({uri.rsplit("/", 2)[1] for uri in storage.list_uris(remote + "/")}) == ["epoch-3"]
