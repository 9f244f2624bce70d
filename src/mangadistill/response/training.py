"""Train the response student: a small self-hosted causal LM with LoRA on (prompt, response) rows.

Each row is rendered with the student tokenizer's chat template: the prompt part is the conversation up to
the assistant turn (``add_generation_prompt=True``), the response part is the rest of the rendered
conversation (the response text and the template's end-of-turn). The two parts are tokenized separately and
concatenated, so the loss mask is exact: only response tokens are targets.

Objective, averaged over the response tokens t of a batch (z student logits, u teacher logits, y the next
token):

    L = β · CE(z_t, y_t) + (1 − β) · T² · KL(softmax(u_t / T) ‖ softmax(z_t / T))

β = 1 is sequence-level distillation (train on the teacher's text); β < 1 adds Hinton's token-level term
against a local teacher, which needs the teacher and the student to share a tokenizer (checked, refused
otherwise). T² keeps the KL gradient scale independent of T.

Students: any causal LM folder or builtin name (``mangadistill.core.models.resolve_model``), trained whole with
LoRA, or cut to fewer layers first (``keep_every``, see ``cut_layers``): SmolLM2-135M-Instruct ("smollm2-135m",
30 layers, 134.5M params) with ``keep_every=3`` gives a 10-layer, 63.7M-param student with the same tokenizer,
so the uncut model can be its token-level teacher.

Runs on the CPU or a GPU through accelerate (device placement, bf16/fp16 mixed precision): one process, or
data-parallel under torchrun / accelerate launch, each step's batch shared among the processes and cut into
``gradient_accumulation_steps`` micro-batches weighted by their response tokens (``core.training.micro_batches``),
so the update is the one a single process makes. Every
``checkpoint_every`` optimizer steps the LoRA weights, optimizer, scheduler, step, losses and RNG states are
written atomically (``core.training.save_checkpoint``: weights-only loading, a run fingerprint, the previous
state as a fallback); a run that finds a checkpoint resumes from it and ends with the weights of an
uninterrupted run.

Output folder:
    adapter/   the LoRA adapter (peft), the tokenizer and ``student.json`` (how to rebuild the base)
    merged/    the adapter merged into the student (``merge_and_unload``): a plain transformers model folder
    training_report.json
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from mangadistill.core.models import resolve_model
from mangadistill.core.storage import make_readable
from mangadistill.core.training import (
    BaseTrainConfig,
    fresh_accelerator,
    latest_checkpoint,
    length_grouped_batches,
    load_checkpoint,
    micro_batches,
    open_run_checkpoints,
    restore_rng,
    rng_state,
    run_fingerprint,
    save_checkpoint,
)

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
STUDENT_SPEC_FILE = "student.json"
REPORT_FILE = "training_report.json"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
_LAYER_KEY = re.compile(r"\.layers\.(\d+)\.")


class TokenizerMismatchError(ValueError):
    """Teacher and student tokenizers differ, so their logits cannot be compared token by token."""


@dataclass
class ResponseTrainConfig(BaseTrainConfig):
    """Hyper-parameters of the response student (the shared ones from ``BaseTrainConfig``, with its defaults).

    student_model: a builtin name, local folder or gs:// prefix (``resolve_model``); keep_every: 1 trains the
    whole model, k > 1 keeps ceil(n/k) evenly spaced layers (``cut_layers``). beta weighs CE against the
    token-level KL (1.0: no teacher logits); temperature softens both distributions of the KL term.
    max_steps, when set, overrides epochs. mixed_precision: "no", "bf16" or "fp16" (accelerate).
    system_prompt: None keeps the chat template's default system turn.
    """

    epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_length: int = 256
    student_model: str = "smollm2-135m"
    keep_every: int = 1
    max_steps: int | None = None
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"
    beta: float = 1.0
    temperature: float = 2.0
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    checkpoint_every: int = 50
    system_prompt: str | None = None


@dataclass
class ResponseTrainResult:
    output_dir: str
    adapter_dir: str
    merged_dir: str
    total_steps: int
    steps_run: int
    resumed_from_step: int
    step_losses: list[float] = field(default_factory=list)
    step_ce: list[float] = field(default_factory=list)
    step_kl: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    seconds_per_step: float = 0.0
    processes: int = 1
    """Data-parallel processes that trained (torchrun / accelerate launch); 1 for a plain run."""
    rows: int = 0
    rows_truncated: int = 0
    rows_without_response_tokens: int = 0
    response_tokens: int = 0
    num_parameters: int = 0
    trainable_parameters: int = 0
    device: str = "cpu"

    def as_dict(self) -> dict:
        return asdict(self)


# --- students --------------------------------------------------------------------------------------------


def kept_layer_indices(num_layers: int, keep_every: int) -> list[int]:
    """m = ceil(n / k) layer indices spread evenly from the first to the last: round(i·(n−1)/(m−1)).

    Keeping both ends matters: the first layer reads the embeddings and the last feeds the final norm and
    the (tied) output head. n=30, k=3 keeps 0, 3, 6, 10, 13, 16, 19, 23, 26, 29.
    """
    if keep_every < 1:
        raise ValueError(f"keep_every must be >= 1, got {keep_every}")
    kept = math.ceil(num_layers / keep_every)
    if kept >= num_layers:
        return list(range(num_layers))
    if kept == 1:
        return [num_layers - 1]
    return sorted({round(i * (num_layers - 1) / (kept - 1)) for i in range(kept)})


def cut_layers(model: PreTrainedModel, keep_every: int = 3) -> PreTrainedModel:
    """A new model of the same class with only ``kept_layer_indices`` decoder layers and every other weight.

    Works for decoders whose layer weights are named ``….layers.<i>.…`` (llama, mistral, qwen2, gemma); the
    strict state-dict load proves every weight found a place. Per-layer config lists (``layer_types``) are
    cut the same way.
    """
    config = model.config
    kept = kept_layer_indices(config.num_hidden_layers, keep_every)
    if len(kept) == config.num_hidden_layers:
        return model
    new_index = {old: new for new, old in enumerate(kept)}
    cut_config = config.__class__.from_dict(config.to_dict())
    cut_config.num_hidden_layers = len(kept)
    if isinstance(getattr(config, "layer_types", None), list):
        cut_config.layer_types = [config.layer_types[i] for i in kept]
    state = {}
    for name, tensor in model.state_dict().items():
        match = _LAYER_KEY.search(name)
        if match is None:
            state[name] = tensor
        elif int(match.group(1)) in new_index:
            state[name[: match.start()] + f".layers.{new_index[int(match.group(1))]}." + name[match.end() :]] = tensor
    cut = model.__class__(cut_config).to(model.dtype)
    cut.load_state_dict(state, strict=True)
    cut.generation_config = model.generation_config
    return cut


def load_student(model_ref: str, keep_every: int = 1, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Resolve ``model_ref`` (``resolve_model``), load it as a causal LM and cut it when keep_every > 1."""
    model = AutoModelForCausalLM.from_pretrained(resolve_model(model_ref), dtype=dtype)
    return cut_layers(model, keep_every) if keep_every > 1 else model


def load_student_spec(adapter_dir: str | Path) -> dict:
    """The ``student.json`` of an adapter folder: {"student_model", "keep_every", "kept_layers"}."""
    path = Path(adapter_dir) / STUDENT_SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: this adapter folder was not written by train_response_student")
    return json.loads(path.read_text())


def load_adapter_merged(adapter_dir: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Rebuild the student base from ``student.json``, apply the LoRA adapter and merge it (a plain model)."""
    spec = load_student_spec(adapter_dir)
    base = load_student(spec["student_model"], spec["keep_every"], dtype=dtype)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


# --- data ------------------------------------------------------------------------------------------------


@dataclass
class EncodedRows:
    """Token ids and loss labels (IGNORE_INDEX on prompt tokens) per row, plus truncation counts."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    rows_truncated: int
    rows_without_response_tokens: list[int]


def chat_messages(prompt: str, system_prompt: str | None = None) -> list[dict]:
    """[system (when given), user] messages: the conversation a response answers."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return [*system, {"role": "user", "content": prompt}]


def chat_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, system_prompt: str | None = None) -> str:
    """The chat template rendered up to the assistant turn: what the student sees before it answers."""
    return tokenizer.apply_chat_template(chat_messages(prompt, system_prompt), tokenize=False,
                                         add_generation_prompt=True)


def encode_rows(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_length: int,
    system_prompt: str | None = None,
) -> EncodedRows:
    """Render each row with the chat template, tokenize prompt and response parts, mask the prompt.

    Rows longer than max_length are cut at the right (counted in rows_truncated); a row whose response
    starts beyond max_length keeps no target token and is listed in rows_without_response_tokens.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not tokenizer.chat_template:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template; the student needs one")
    input_ids, labels, truncated, without = [], [], 0, []
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        messages = chat_messages(prompt, system_prompt)
        prompt_text = chat_prompt(tokenizer, prompt, system_prompt)
        full_text = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": response}], tokenize=False
        )
        if not full_text.startswith(prompt_text):
            raise ValueError(f"row {row}: the chat template renders the conversation without its prompt prefix")
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + response_ids)[:max_length]
        targets = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
        truncated += len(prompt_ids) + len(response_ids) > max_length
        if all(t == IGNORE_INDEX for t in targets[1:]):
            without.append(row)
        input_ids.append(ids)
        labels.append(targets)
    return EncodedRows(input_ids, labels, truncated, without)


def collate(rows: EncodedRows, indices: Sequence[int], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids (pad_token_id), attention_mask, labels (IGNORE_INDEX on padding)."""
    width = max(len(rows.input_ids[i]) for i in indices)
    ids = torch.full((len(indices), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(indices), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for slot, i in enumerate(indices):
        n = len(rows.input_ids[i])
        ids[slot, :n] = torch.tensor(rows.input_ids[i])
        labels[slot, :n] = torch.tensor(rows.labels[i])
        mask[slot, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batch_schedule(lengths: Sequence[int], batch_size: int, seed: int, total_steps: int) -> list[np.ndarray]:
    """``total_steps`` batches: epoch e is ``length_grouped_batches`` with seed + e, epochs back to back."""
    schedule: list[np.ndarray] = []
    epoch = 0
    while len(schedule) < total_steps:
        schedule += length_grouped_batches(lengths, batch_size, seed + epoch)
        epoch += 1
    return schedule[:total_steps]


# --- loss ------------------------------------------------------------------------------------------------


def response_window(labels: torch.Tensor) -> int:
    """The number of trailing positions whose logits the loss reads: from the position before the batch's
    earliest response token to the end. Passed as ``logits_to_keep``, it spares the vocab-sized output
    projection on prompt positions; the loss is unchanged."""
    has_target = labels != IGNORE_INDEX
    first = int(has_target.int().argmax(dim=1)[has_target.any(dim=1)].min())
    return labels.shape[1] - first + 1


def response_distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    beta: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(L, CE, KL) with L = β·CE + (1 − β)·T²·KL(softmax(u/T) ‖ softmax(z/T)), means over response tokens.

    Logits are (batch, seq, vocab) and labels (batch, seq) unshifted: position p predicts labels[p + 1].
    KL is None (and L = CE) without teacher logits or with β = 1.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    targets = labels[:, 1:]
    positions = targets != IGNORE_INDEX
    if not positions.any():
        raise ValueError("the batch has no response tokens to learn from")
    student = student_logits[:, :-1][positions].float()
    ce = F.cross_entropy(student, targets[positions])
    if teacher_logits is None or beta == 1.0:
        return ce, ce, None
    teacher = teacher_logits[:, :-1][positions].float()
    kl = F.kl_div(
        F.log_softmax(student / temperature, dim=-1),
        F.log_softmax(teacher / temperature, dim=-1),
        log_target=True,
        reduction="none",
    ).sum(dim=-1).mean()
    return beta * ce + (1.0 - beta) * temperature**2 * kl, ce, kl


def check_same_tokenizer(
    student: PreTrainedTokenizerBase, teacher: PreTrainedTokenizerBase, student_vocab: int, teacher_vocab: int
) -> None:
    """Raise TokenizerMismatchError unless both vocabularies map every token to the same id and the two
    models' output layers (config.vocab_size) have the same width."""
    student_tokens, teacher_tokens = student.get_vocab(), teacher.get_vocab()
    differing = sorted(set(student_tokens.items()) ^ set(teacher_tokens.items()))
    if differing or student_vocab != teacher_vocab:
        example = f"; first difference: {differing[0]!r}" if differing else ""
        raise TokenizerMismatchError(
            f"token-level KL needs one tokenizer: student {student.name_or_path!r} has {len(student_tokens)} "
            f"tokens and {student_vocab} logits, teacher {teacher.name_or_path!r} has {len(teacher_tokens)} "
            f"tokens and {teacher_vocab} logits, {len(differing)} (token, id) pairs differ{example}. "
            "Use sequence-level distillation instead (beta=1.0, training on the teacher's responses)."
        )


# --- training --------------------------------------------------------------------------------------------


def _total_steps(config: ResponseTrainConfig, usable_rows: int) -> int:
    if config.max_steps is not None:
        if config.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {config.max_steps}")
        return config.max_steps
    return config.epochs * math.ceil(usable_rows / config.batch_size)


def _micro_batch_loss(
    model: torch.nn.Module, teacher: PreTrainedModel | None, batch: dict[str, torch.Tensor], accelerator,
    config: ResponseTrainConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`response_distillation_loss` of one collated micro-batch: (L, CE, KL), means over its response tokens."""
    batch = {name: tensor.to(accelerator.device) for name, tensor in batch.items()}
    window = response_window(batch["labels"])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "logits_to_keep": window}
    teacher_logits = None
    if teacher is not None:
        with torch.no_grad(), accelerator.autocast():
            teacher_logits = teacher(**inputs).logits
    logits = model(**inputs).logits
    return response_distillation_loss(logits, batch["labels"][:, -window:], teacher_logits, config.beta,
                                      config.temperature)


def _save_student(peft_model: PeftModel, tokenizer: PreTrainedTokenizerBase, out: Path, config: ResponseTrainConfig,
                  student_folder: str) -> None:
    """out/ADAPTER_DIR (the LoRA adapter, tokenizer, STUDENT_SPEC_FILE) and out/MERGED_DIR (merged model)."""
    adapter_dir, merged_dir = out / ADAPTER_DIR, out / MERGED_DIR
    peft_model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    kept = kept_layer_indices(AutoConfig.from_pretrained(student_folder).num_hidden_layers, config.keep_every)
    (adapter_dir / STUDENT_SPEC_FILE).write_text(json.dumps(
        {"student_model": config.student_model, "keep_every": config.keep_every, "kept_layers": kept}, indent=2))
    merged = peft_model.merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    make_readable(out)


def _load_teacher(teacher_model: str, tokenizer: PreTrainedTokenizerBase, student_vocab: int) -> PreTrainedModel:
    """Load the teacher in eval mode after checking that it shares the student's tokenizer."""
    folder = resolve_model(teacher_model)
    teacher_vocab = AutoConfig.from_pretrained(folder).vocab_size
    check_same_tokenizer(tokenizer, AutoTokenizer.from_pretrained(folder), student_vocab, teacher_vocab)
    teacher = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return teacher.eval().requires_grad_(False)


def train_response_student(
    prompts: Sequence[str],
    responses: Sequence[str],
    output_dir: str,
    config: ResponseTrainConfig,
    teacher_model: str | None = None,
    checkpoint_dir: str | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> ResponseTrainResult:
    """Train a LoRA student on (prompt, response) rows; write adapter/, merged/ and training_report.json.

    teacher_model (a ``resolve_model`` reference) is required when beta < 1 and must share the student's
    tokenizer. Checkpoints go under checkpoint_dir (local or gs://) in this run's folder
    (`core.training.open_run_checkpoints`: config, teacher and rows); the newest is resumed (its fallback, the
    checkpoint before it, when the newest cannot be read). on_step(step, loss) is called after every optimizer
    step.
    """
    if config.beta < 1.0 and teacher_model is None:
        raise ValueError(f"beta={config.beta} weighs a token-level KL term, which needs teacher_model")
    if config.beta == 1.0 and teacher_model is not None:
        log.warning("teacher_model %r is not loaded: beta=1.0 gives the token-level KL term no weight", teacher_model)
    if config.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {config.checkpoint_every}")
    started = time.perf_counter()
    set_seed(config.seed)
    accelerator = fresh_accelerator(config.mixed_precision)
    student_folder = resolve_model(config.student_model)
    tokenizer = AutoTokenizer.from_pretrained(student_folder)
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer of {config.student_model!r} has no pad token")
    model = load_student(config.student_model, config.keep_every)
    teacher = None
    if config.beta < 1.0:
        teacher = _load_teacher(teacher_model, tokenizer, model.config.vocab_size).to(accelerator.device)

    rows = encode_rows(tokenizer, prompts, responses, config.max_length, config.system_prompt)
    if rows.rows_without_response_tokens:
        log.warning(
            "%d rows keep no response token within max_length=%d and are not trained on (first: row %d)",
            len(rows.rows_without_response_tokens), config.max_length, rows.rows_without_response_tokens[0],
        )
    usable = sorted(set(range(len(prompts))) - set(rows.rows_without_response_tokens))
    if not usable:
        raise ValueError(f"no row keeps a response token within max_length={config.max_length}")
    total_steps = _total_steps(config, len(usable))
    schedule = batch_schedule([len(rows.input_ids[i]) for i in usable], config.batch_size, config.seed, total_steps)

    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules, task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    fingerprint = run_fingerprint(config, teacher_model, list(prompts), list(responses))
    start_step, losses, ce_values, kl_values = 0, [], [], []
    checkpoints = open_run_checkpoints(checkpoint_dir, fingerprint, prefix="step")
    latest = latest_checkpoint(checkpoints.path, prefix="step") if checkpoints else None
    if latest and (state := load_checkpoint(latest, fingerprint)) is not None:
        set_peft_model_state_dict(accelerator.unwrap_model(model), state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        start_step, losses, ce_values, kl_values = state["step"], state["losses"], state["ce"], state["kl"]
        log.info("resuming from %s (%d of %d steps done)", latest, start_step, total_steps)

    target_tokens = [sum(t != IGNORE_INDEX for t in rows.labels[i][1:]) for i in usable]
    rank, world = accelerator.process_index, accelerator.num_processes
    model.train()
    bar = tqdm(total=total_steps, initial=start_step, desc="train response student", unit="step",
               disable=not progress or not accelerator.is_main_process)
    loop_started = time.perf_counter()
    for step in range(start_step, total_steps):
        parts = micro_batches(schedule[step], rank, world, config.gradient_accumulation_steps, target_tokens)
        totals = torch.zeros(3, device=accelerator.device)  # this process's weighted loss, CE, KL
        for part, (micro, weight) in enumerate(parts):
            syncing = part == len(parts) - 1  # DDP all-reduces the gradients on the last micro-batch only
            with contextlib.nullcontext() if syncing else accelerator.no_sync(model):
                loss, ce, kl = _micro_batch_loss(model, teacher, collate(rows, [usable[i] for i in micro],
                                                                          tokenizer.pad_token_id), accelerator, config)
                accelerator.backward(loss * weight)
            totals += weight * torch.stack([loss.detach(), ce.detach(), torch.zeros_like(ce) if kl is None
                                            else kl.detach()])
        accelerator.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step_loss, step_ce, step_kl = accelerator.reduce(totals, "mean").tolist()
        losses.append(step_loss)
        ce_values.append(step_ce)
        if teacher is not None:
            kl_values.append(step_kl)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        done = step + 1
        if checkpoints and (done % config.checkpoint_every == 0 or done == total_steps):
            if accelerator.is_main_process:
                save_checkpoint(checkpoints.path, done, {
                    "step": done, "adapter": get_peft_model_state_dict(accelerator.unwrap_model(model)),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                    "losses": losses, "ce": ce_values, "kl": kl_values,
                }, fingerprint, prefix="step")
                checkpoints.saved()
            accelerator.wait_for_everyone()
        if on_step is not None:
            on_step(done, losses[-1])
    bar.close()
    loop_seconds = time.perf_counter() - loop_started
    steps_run = total_steps - start_step

    peft_model = accelerator.unwrap_model(model).eval().cpu()
    num_parameters = sum(p.numel() for p in peft_model.parameters())
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    out = Path(output_dir)
    adapter_dir, merged_dir = out / ADAPTER_DIR, out / MERGED_DIR
    if accelerator.is_main_process:
        _save_student(peft_model, tokenizer, out, config, student_folder)
    response_tokens = sum(sum(t != IGNORE_INDEX for t in labels[1:]) for labels in rows.labels)
    result = ResponseTrainResult(
        output_dir=str(out), adapter_dir=str(adapter_dir), merged_dir=str(merged_dir), total_steps=total_steps,
        steps_run=steps_run, resumed_from_step=start_step, step_losses=losses, step_ce=ce_values,
        step_kl=kl_values, train_seconds=time.perf_counter() - started,
        seconds_per_step=loop_seconds / steps_run if steps_run else 0.0, rows=len(prompts),
        rows_truncated=rows.rows_truncated, rows_without_response_tokens=len(rows.rows_without_response_tokens),
        response_tokens=response_tokens, num_parameters=num_parameters, trainable_parameters=trainable,
        device=str(accelerator.device), processes=world,
    )
    if accelerator.is_main_process:
        (out / REPORT_FILE).write_text(json.dumps(
            {"config": asdict(config), "teacher_model": teacher_model, **result.as_dict()}, indent=2))
    accelerator.wait_for_everyone()
    return result
