"""Training-loop pieces every trainer shares: a base config, seeding, length-grouped batches and their
per-process micro-batches (data-parallel and gradient accumulation with the same update), the device, and
atomic checkpoints that a retried task resumes from (model, optimizer, scheduler and RNG state).

Where they live: `open_run_checkpoints(root, fingerprint)` gives each run its own folder
`<root>/<fingerprint[:16]>/` (a local folder, or a gs:// prefix mirrored after every save), so a retried or
rerun task with the same config and data resumes, and a run with other data never meets another's checkpoint.
The pipelines put `root` under the pipeline root (`<pipeline root>/checkpoints/<stage>`).

Checkpoints are safe to find on a shared volume: they are loaded with weights_only=True (a planted pickle does
not run), each carries the fingerprint of its run (config and training data, `run_fingerprint`) and a folder
with another fingerprint is refused before anything in it is loaded, and each keeps the run's previous state as
a fallback for a newest file that cannot be read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mangadistill.core import storage

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
    gradient_accumulation_steps: int = 1
    """Cut each batch into this many micro-batches: the same update in less memory (`micro_batches`)."""


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
    processes: int = 1
    """Data-parallel processes that trained (torchrun / accelerate launch); 1 for a plain run."""

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


CHECKPOINT_STATE = "state.pt"
CHECKPOINT_FALLBACK = "fallback.pt"
CHECKPOINT_FINGERPRINT = "fingerprint"
_UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError)


def bf16_gpu() -> bool:
    """A CUDA GPU with bfloat16 (Ampere or newer): the trainers run under bf16 autocast there."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def fresh_accelerator(mixed_precision: str = "no"):
    """An `accelerate.Accelerator` at `mixed_precision` ("no", "bf16", "fp16") for one training run.

    accelerate keeps one process-wide state; each run starts from its own precision, as transformers'
    TrainingArguments does, so runs with different precisions can follow each other in one process. The
    distributed state (torchrun's processes, the process group) is kept. Without a GPU it runs on the CPU, and
    under torchrun the processes train data-parallel over gloo (accelerate's MULTI_CPU). split_batches: a
    batch is the global batch, shared among the processes (`micro_batches`), so a prepared scheduler steps
    once per optimizer step whatever the number of processes."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(),
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def micro_batches(batch: np.ndarray, rank: int, world: int, accumulation: int,
                  row_sizes: Sequence[float] | None = None) -> list[tuple[np.ndarray, float]]:
    """Process `rank`'s share of one global `batch` (every world-th row from rank) cut into at most
    `accumulation` micro-batches, each with its loss weight w = world · size(micro) / size(batch), where a
    row's size is 1 or its `row_sizes` entry (e.g. its target tokens, for a loss averaged over tokens).

    With a micro-batch loss L_m averaged over its rows (or their tokens), Σ_m w_m · L_m averaged over the
    `world` processes (what DDP does to gradients) is the average over the whole batch: one process, many
    processes and any accumulation give the same update. A process whose share is empty (a last batch with
    fewer rows than processes) gets the first row at weight 0, so it still takes part in the all-reduce."""
    if world < 1 or not 0 <= rank < world or accumulation < 1:
        raise ValueError(f"need 0 <= rank < world and accumulation >= 1, got rank={rank} world={world} "
                         f"accumulation={accumulation}")
    sizes = None if row_sizes is None else np.asarray(row_sizes, dtype=float)

    def size(rows: np.ndarray) -> float:
        return float(len(rows)) if sizes is None else float(sizes[rows].sum())

    share = batch[rank::world]
    if not len(share):
        return [(batch[:1], 0.0)]
    return [(micro, world * size(micro) / size(batch)) for micro in np.array_split(share, accumulation) if len(micro)]


def fit_epochs(
    model: torch.nn.Module, optimizer, scheduler, accelerator, *,
    epoch_batches: Callable[[int], list[np.ndarray]],
    batch_loss: Callable[[torch.nn.Module, np.ndarray], torch.Tensor],
    epochs: int, max_grad_norm: float, accumulation: int = 1, start_epoch: int = 0, losses: Sequence[float] = (),
    checkpoints: RunCheckpoints | None = None, fingerprint: str | None = None, progress: bool = True,
) -> list[float]:
    """Train `model` from `start_epoch` to `epochs` with `accelerator` (`fresh_accelerator`); returns every
    epoch's loss, the mean over its batches.

    Each epoch's global batches come from `epoch_batches(epoch)`; every process takes its micro-batches of each
    (`micro_batches`) and `batch_loss(model, rows)` gives their mean loss; gradients are all-reduced once per
    batch, clipped to `max_grad_norm`, then the optimizer and scheduler step. After each epoch the main process
    writes a checkpoint (`write_checkpoint`, mirrored by `checkpoints.saved`). model, optimizer and scheduler
    are the plain objects (restore a checkpoint into them first); they are prepared here."""
    trained, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    params = [p for p in trained.parameters() if p.requires_grad]
    rank, world = accelerator.process_index, accelerator.num_processes
    losses = list(losses)
    for epoch in range(start_epoch, epochs):
        trained.train()
        batches = epoch_batches(epoch)
        running, bar = 0.0, tqdm(batches, desc=f"train epoch {epoch + 1}/{epochs}", unit="step",
                                 disable=not progress or not accelerator.is_main_process)
        for step, batch in enumerate(bar):
            parts = micro_batches(batch, rank, world, accumulation)
            batch_total = 0.0
            for part, (rows, weight) in enumerate(parts):
                syncing = part == len(parts) - 1  # DDP all-reduces the gradients on the last micro-batch only
                with contextlib.nullcontext() if syncing else accelerator.no_sync(trained), accelerator.autocast():
                    loss = batch_loss(trained, rows) * weight
                    accelerator.backward(loss)
                batch_total += loss.item()
            accelerator.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            running += float(accelerator.reduce(torch.tensor(batch_total, device=accelerator.device), "mean"))
            bar.set_postfix(loss=f"{running / (step + 1):.4f}")
        losses.append(running / max(1, len(batches)))
        log.info("epoch %d/%d loss %.4f", epoch + 1, epochs, losses[-1])
        if checkpoints and accelerator.is_main_process:
            write_checkpoint(checkpoints.path, epoch + 1, accelerator.unwrap_model(trained), optimizer, scheduler,
                             losses, fingerprint)
            checkpoints.saved()
        accelerator.wait_for_everyone()
    return losses


class CheckpointMismatchError(ValueError):
    """A checkpoint folder holds another run's checkpoint: its fingerprint is not this run's."""


def run_fingerprint(config: object, *data: object) -> str:
    """sha256 hex of a dataclass config (every field) and the training data (JSON values: strings, numbers,
    None and lists of them; numpy arrays by dtype, shape and bytes). Two runs share it only when they train
    the same model from the same rows, so a checkpoint is resumed only by the run that wrote it."""
    digest = hashlib.sha256()
    for part in (asdict(config), *data):
        if isinstance(part, np.ndarray):
            blob = f"{part.dtype.str}{part.shape}".encode() + np.ascontiguousarray(part).tobytes()
        else:
            blob = json.dumps(part, sort_keys=True, default=str).encode()
        digest.update(len(blob).to_bytes(8, "little") + blob)
    return digest.hexdigest()


def rng_state() -> dict:
    """The python, numpy, torch (and CUDA) RNG states as plain values and tensors, which a weights-only
    `torch.load` accepts (numpy's key array becomes a list)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, keys.tolist(), position, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Set the RNGs to what `rng_state` returned (the CUDA ones only when a GPU is visible)."""
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _checkpoints(root: str | Path, prefix: str) -> list[tuple[int, Path]]:
    """The complete `<prefix>-N` folders, newest first (temporary `.<prefix>-N.tmp` folders are ignored)."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)")
    found = [(int(match.group(1)), path) for path in Path(root).glob(f"{prefix}-*")
             if (match := pattern.fullmatch(path.name))]
    return sorted(found, reverse=True)


def latest_checkpoint(checkpoint_dir: str | Path, prefix: str = "epoch") -> Path | None:
    """The complete `<prefix>-N` folder with the largest N (temporary `.<prefix>-N.tmp` folders are ignored)."""
    found = _checkpoints(checkpoint_dir, prefix)
    return found[0][1] if found else None


def _fingerprint_of(checkpoint: Path) -> str | None:
    path = checkpoint / CHECKPOINT_FINGERPRINT
    return path.read_text().strip() if path.is_file() else None


def _previous_state(root: Path, number: int, fingerprint: str | None, prefix: str) -> Path | None:
    """The state this run had before checkpoint `number`: the newest checkpoint's state.pt when it is older,
    its fallback.pt when `number` is being written again (the run resumed from that fallback)."""
    found = _checkpoints(root, prefix)
    if not found or _fingerprint_of(found[0][1]) != fingerprint or found[0][0] > number:
        return None
    newest, folder = found[0]
    path = folder / (CHECKPOINT_STATE if newest < number else CHECKPOINT_FALLBACK)
    return path if path.is_file() else None


def save_checkpoint(root: Path, number: int, state: dict, fingerprint: str | None, prefix: str = "epoch") -> None:
    """Write `<prefix>-N` atomically (a temporary folder, then a rename): state.pt, the run's fingerprint and
    fallback.pt, the run's previous state (hard-linked, or copied), which `load_checkpoint` falls back to when
    state.pt cannot be read. Every other `<prefix>-*` folder is then removed. `state` holds tensors and plain
    values only (see `rng_state`)."""
    root.mkdir(parents=True, exist_ok=True)
    previous = _previous_state(root, number, fingerprint, prefix)
    tmp = root / f".{prefix}-{number}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / CHECKPOINT_STATE)
    if fingerprint is not None:
        (tmp / CHECKPOINT_FINGERPRINT).write_text(fingerprint)
    if previous is not None:
        try:
            os.link(previous, tmp / CHECKPOINT_FALLBACK)
        except OSError:  # no hard links on this file system (gcsfuse, another device)
            shutil.copyfile(previous, tmp / CHECKPOINT_FALLBACK)
    target = root / f"{prefix}-{number}"
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    for _, old in _checkpoints(root, prefix):
        if old != target:
            shutil.rmtree(old)


RUN_FOLDER_DIGITS = 16
"""Hex digits of the run fingerprint that name a run's folder under a checkpoint root."""


@dataclass
class RunCheckpoints:
    """One run's checkpoints: `path`, the local folder the trainer reads and writes (`save_checkpoint`), and
    `remote`, the gs:// folder it is mirrored to after every save (None when the root is local)."""

    path: Path
    remote: str | None = None
    prefix: str = "epoch"
    _scratch: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def saved(self) -> None:
        """Mirror the newest local checkpoint to `remote`, its fingerprint file last (a remote folder without
        one is incomplete and never resumed), then remove every other remote checkpoint, complete or torn."""
        if self.remote is None or (newest := latest_checkpoint(self.path, self.prefix)) is None:
            return
        files = sorted((p for p in newest.iterdir() if p.is_file()), key=lambda p: p.name == CHECKPOINT_FINGERPRINT)
        for path in files:
            storage.upload_file(path, f"{self.remote}/{newest.name}/{path.name}")
        current = f"{self.remote}/{newest.name}"
        for folder in {uri.rsplit("/", 1)[0] for uri in storage.list_uris(self.remote + "/")} - {current}:
            storage.delete_tree(folder)


def _remote_checkpoints(remote: str, prefix: str) -> list[tuple[int, str]]:
    """The complete (fingerprinted) `<prefix>-N` folders under the gs:// folder `remote`, newest first."""
    pattern = re.compile(rf"{re.escape(remote)}/({re.escape(prefix)}-(\d+))/{CHECKPOINT_FINGERPRINT}")
    found = [(int(match.group(2)), f"{remote}/{match.group(1)}") for uri in storage.list_uris(remote + "/")
             if (match := pattern.fullmatch(uri))]
    return sorted(found, reverse=True)


def open_run_checkpoints(root: str | None, fingerprint: str, prefix: str = "epoch") -> RunCheckpoints | None:
    """The checkpoints of the run with `fingerprint` under `root`: `<root>/<fingerprint[:16]>`. A local root is
    used in place; for a gs:// root the newest complete remote checkpoint is first downloaded into a temporary
    folder (`RunCheckpoints.saved` mirrors new ones back). None when `root` is empty, and, with a warning, for
    a root `storage.usable_folder` refuses (minio://, an unresolved placeholder): that run trains without
    checkpoints and a retry starts over."""
    if not root or not storage.usable_folder(root, "resumable training checkpoints"):
        return None
    folder = fingerprint[:RUN_FOLDER_DIGITS]
    if not storage.is_gcs(root):
        return RunCheckpoints(Path(root) / folder, prefix=prefix)
    remote = f"{root.rstrip('/')}/{folder}"
    scratch = tempfile.TemporaryDirectory(prefix="mangadistill-checkpoints-")
    local = Path(scratch.name)
    if found := _remote_checkpoints(remote, prefix):
        newest = found[0][1]
        storage.download_dir(newest, local / newest.rsplit("/", 1)[1])
        log.info("downloaded checkpoint %s to resume from", newest)
    return RunCheckpoints(local, remote=remote, prefix=prefix, _scratch=scratch)


def load_checkpoint(checkpoint: Path, fingerprint: str | None, map_location: str = "cpu") -> dict | None:
    """The state saved in the checkpoint folder `checkpoint` (`latest_checkpoint`), else its fallback.pt (the
    state before it) when state.pt cannot be read, else None: the caller starts from scratch. Every file is
    loaded with weights_only=True, so one that would run code when unpickled is refused like a corrupt one.

    Raises CheckpointMismatchError, before loading anything, when the folder's fingerprint is not `fingerprint`
    (another run's folder is neither resumed nor overwritten); None skips that check.
    """
    if fingerprint is not None and (found := _fingerprint_of(checkpoint)) != fingerprint:
        raise CheckpointMismatchError(
            f"checkpoint {checkpoint} was written by another run (fingerprint {found or 'missing'}, this run's "
            f"{fingerprint}: the config or the training data differ); use a fresh checkpoint folder or empty this one"
        )
    for path in (checkpoint / CHECKPOINT_STATE, checkpoint / CHECKPOINT_FALLBACK):
        if not path.is_file():
            continue
        try:
            state = torch.load(path, weights_only=True, map_location=map_location)
        except _UNREADABLE as error:
            log.warning("checkpoint file %s is not loaded: unreadable or not weights only (%s: %s)", path,
                        type(error).__name__, str(error).partition("\n")[0])
            continue
        if path.name == CHECKPOINT_FALLBACK:
            log.warning("resuming from the fallback %s, the state saved before %s", path, checkpoint.name)
        return state
    log.warning("no loadable state in %s: training from the start", checkpoint)
    return None


def restore_checkpoint(
    checkpoint: Path, model, optimizer, scheduler, device: str, fingerprint: str | None = None,
) -> tuple[int, list[float]]:
    """Load what `write_checkpoint` saved (see `load_checkpoint`) into model, optimizer, scheduler and the RNGs;
    returns (epochs done, their losses), (0, []) when nothing could be loaded."""
    state = load_checkpoint(checkpoint, fingerprint, map_location=device)
    if state is None:
        return 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"])
    log.info("resuming from %s (epoch %d done)", checkpoint, state["epoch"])
    return state["epoch"], state["losses"]


def write_checkpoint(
    root: Path, epoch: int, model, optimizer, scheduler, losses: list[float], fingerprint: str | None = None,
) -> None:
    """Save epoch-N (model, optimizer, scheduler, RNG states, losses) with `save_checkpoint`."""
    save_checkpoint(root, epoch, {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": rng_state(), "epoch": epoch, "losses": losses,
    }, fingerprint)
