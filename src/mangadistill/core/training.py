"""Training-loop pieces every trainer shares: a base config, seeding, length-grouped batches, the device, and
atomic epoch checkpoints that a retried task resumes from (model, optimizer, scheduler and RNG state)."""

from __future__ import annotations

import logging
import random
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class BaseTrainConfig:
    """The hyper-parameters every trainer has; a wing's config adds its own fields and may change defaults."""

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_length: int = 64
    seed: int = 13
    max_grad_norm: float = 1.0


def default_device() -> str:
    """CUDA when a GPU is visible (the GPU node pool), the CPU otherwise."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class TrainResult:
    output_dir: str
    epochs_run: int
    resumed_from_epoch: int
    epoch_losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    num_parameters: int = 0
    trainable_parameters: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, group: int = 50) -> list[np.ndarray]:
    """Shuffle, sort by length within windows of `group` batches, cut into batches, shuffle the batches.

    Batches hold texts of similar length, so dynamic padding adds few pad tokens; order stays random.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    window = batch_size * group
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def latest_checkpoint(checkpoint_dir: str | Path, prefix: str = "epoch") -> Path | None:
    """The complete `<prefix>-N` folder with the largest N (temporary `.<prefix>-N.tmp` folders are ignored)."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)")
    found = [(int(match.group(1)), path) for path in Path(checkpoint_dir).glob(f"{prefix}-*")
             if (match := pattern.fullmatch(path.name))]
    return max(found)[1] if found else None


def restore_checkpoint(checkpoint: Path, model, optimizer, scheduler, device: str) -> tuple[int, list[float]]:
    """Load what `write_checkpoint` saved into model, optimizer, scheduler and the RNGs; (epochs done, losses)."""
    state = torch.load(checkpoint / "state.pt", weights_only=False, map_location=device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"].cpu())
    np.random.set_state(state["numpy_rng"])
    log.info("resuming from %s (epoch %d done)", checkpoint, state["epoch"])
    return state["epoch"], state["losses"]


def write_checkpoint(root: Path, epoch: int, model, optimizer, scheduler, losses: list[float]) -> None:
    """Write epoch-N atomically (temp folder, then rename) and keep only the newest checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".epoch-{epoch}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(
        {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "epoch": epoch,
            "losses": losses,
        },
        tmp / "state.pt",
    )
    tmp.rename(root / f"epoch-{epoch}")
    for old in root.glob("epoch-*"):
        if old.name != f"epoch-{epoch}":
            shutil.rmtree(old)

