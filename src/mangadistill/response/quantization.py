"""Merge the response student's LoRA and quantize it with bitsandbytes: LLM.int8 ("int8") and NF4 ("nf4").

The cost lever of the "cost win too small" failure mode. Each model (the unquantized baseline and every
quantized mode) is loaded, measured and, for the quantized modes, saved and loaded back:

- size_on_disk_mib: all files of its saved folder (weights, config, tokenizer), ``path_size_mb``;
- parameter_mib: ``model.get_memory_footprint()`` (parameters and buffers as held), in MiB;
- rss_delta_mib: process resident memory after loading and generating minus before loading (psutil), what
  the model added on the host; indicative, since the allocator and memory-mapped weight files blur it; on
  CUDA also cuda_allocated_mib, the ``torch.cuda.memory_allocated`` delta;
- tokens_per_second: greedy generation, batch 1, exactly ``max_new_tokens`` new tokens per prompt
  (min_new_tokens = max_new_tokens), total new tokens / total ``generate`` wall time, after one untimed call;
- greedy_token_agreement: the share of generated tokens equal to the baseline's at the same position.

Saving: with transformers 5 and bitsandbytes >= 0.45 both modes serialise (the bnb quantizers report
``is_serializable``): ``save_pretrained`` writes the packed weights, their quantization state and
``quantization_config`` in config.json, and ``from_pretrained(folder, device_map=...)`` loads them back
quantized; reload_max_abs_logit_diff checks that on the first prompt. bitsandbytes quantizes on the CPU too
(``device_map="cpu"``); there int8 matmuls run in float16 and NF4 computes in ``compute_dtype``.
Embeddings and the (tied) output head stay unquantized, as transformers leaves them.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import psutil
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mangadistill.core.benchmarking import MIB, path_size_mb, torch_threads
from mangadistill.core.models import resolve_model
from mangadistill.core.storage import make_readable
from mangadistill.response.training import chat_prompt, load_adapter_merged

log = logging.getLogger(__name__)

QUANT_MODES = ("int8", "nf4")
REPORT_FILE = "response_quantization_report.json"
MERGED_DIR = "merged"
_BNB_CAST_LOGGER = "bitsandbytes.autograd._functions"  # warns on every int8 matmul of float32 inputs


def bnb_config(mode: str, compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    """int8: LLM.int8 (outlier threshold 6.0); nf4: 4-bit NormalFloat, blocks of 64, computing in compute_dtype."""
    if mode == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if mode == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    raise ValueError(f"unknown quantization mode {mode!r}; choose from {QUANT_MODES}")


def full_model_folder(model_ref: str, merged_dir: str | Path) -> tuple[str, bool]:
    """(folder of a plain transformers model, whether it was merged from an adapter).

    A folder with adapter_config.json is a LoRA adapter written by ``train_response_student``: it is merged
    into its student and saved to merged_dir. Anything else goes through ``resolve_model``.
    """
    folder = Path(model_ref)
    if (folder / "adapter_config.json").is_file():
        merged = load_adapter_merged(folder)
        merged.save_pretrained(merged_dir)
        AutoTokenizer.from_pretrained(folder).save_pretrained(merged_dir)
        return str(merged_dir), True
    return resolve_model(model_ref), False


@contextmanager
def _quiet_int8_casts() -> Iterator[None]:
    logger = logging.getLogger(_BNB_CAST_LOGGER)
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def generation_throughput(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    system_prompt: str | None = None,
    warmup: bool = True,
) -> dict:
    """Greedy, batch 1, exactly max_new_tokens per prompt after one untimed call on the first prompt
    (warmup=False: none, the model is already warm).

    Returns {"tokens_per_second", "new_tokens", "seconds", "outputs"} (outputs: new token ids per prompt).
    """
    if not prompts:
        raise ValueError("generation_throughput needs at least one prompt")
    device = model.device
    encoded = [tokenizer(chat_prompt(tokenizer, p, system_prompt), add_special_tokens=False, return_tensors="pt")
               for p in prompts]
    settings = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                    pad_token_id=tokenizer.pad_token_id)
    outputs, seconds = [], 0.0
    with torch.inference_mode(), _quiet_int8_casts():
        if warmup:
            model.generate(**encoded[0].to(device), **settings)
        for batch in encoded:
            batch = batch.to(device)
            start = time.perf_counter()
            generated = model.generate(**batch, **settings)
            new_tokens = generated[0, batch["input_ids"].shape[1] :].tolist()  # .tolist() waits for the device
            seconds += time.perf_counter() - start
            outputs.append(new_tokens)
    new_token_count = sum(map(len, outputs))
    return {"tokens_per_second": new_token_count / seconds, "new_tokens": new_token_count, "seconds": seconds,
            "outputs": outputs}


def _token_agreement(outputs: list[list[int]], reference: list[list[int]]) -> float:
    pairs = [(a, b) for out, ref in zip(outputs, reference, strict=True) for a, b in zip(out, ref, strict=False)]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else 0.0


def _rss_bytes() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def _load_and_measure(
    folder: str,
    device: str,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    system_prompt: str | None,
    **load_kwargs,
) -> tuple[PreTrainedModel, dict, list[list[int]]]:
    """Load a causal LM onto device and run the throughput prompts: (model, figures, generated token ids).

    Memory is read after generating, once every weight has been touched (safetensors maps weights lazily).
    """
    cuda = device.startswith("cuda")
    rss_before = _rss_bytes()
    cuda_before = torch.cuda.memory_allocated() if cuda else 0
    start = time.perf_counter()
    with _quiet_int8_casts():
        model = AutoModelForCausalLM.from_pretrained(folder, device_map=device, **load_kwargs).eval()
    load_seconds = time.perf_counter() - start
    measured = generation_throughput(model, tokenizer, prompts, max_new_tokens, system_prompt)
    figures = {
        "load_seconds": load_seconds,
        "parameter_mib": model.get_memory_footprint() / MIB,
        "rss_delta_mib": (_rss_bytes() - rss_before) / MIB,
        "tokens_per_second": measured["tokens_per_second"],
        "sample_output": tokenizer.decode(measured["outputs"][0], skip_special_tokens=True),
    }
    if cuda:
        figures["cuda_allocated_mib"] = (torch.cuda.memory_allocated() - cuda_before) / MIB
    return model, figures, measured["outputs"]


def _first_prompt_logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str,
                         system_prompt: str | None) -> torch.Tensor:
    batch = tokenizer(chat_prompt(tokenizer, prompt, system_prompt), add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode(), _quiet_int8_casts():
        return model(**batch.to(model.device)).logits.float().cpu()


def _free_memory() -> None:
    """Return freed model memory (the caller has dropped its references) before the next measurement."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def quantize_response_model(
    model_ref: str,
    output_dir: str,
    prompts: Sequence[str],
    modes: Sequence[str] = QUANT_MODES,
    max_new_tokens: int = 32,
    device: str | None = None,
    threads: int | None = None,
    system_prompt: str | None = None,
) -> dict:
    """Merge (if an adapter), measure the baseline, quantize to each mode, save, reload-check, measure.

    Writes output_dir/<mode>/ (loadable with ``AutoModelForCausalLM.from_pretrained(folder, device_map=...)``),
    output_dir/merged/ when model_ref is an adapter, and output_dir/response_quantization_report.json;
    returns the report. Baseline dtype and NF4 compute dtype: float32 on the CPU, bfloat16 on CUDA.
    threads, when set, fixes torch's intra-op threads for the measurements (``torch_threads``).
    """
    unknown = [mode for mode in modes if mode not in QUANT_MODES]
    if unknown:
        raise ValueError(f"unknown quantization modes {unknown}; choose from {QUANT_MODES}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    folder, merged = full_model_folder(model_ref, out / MERGED_DIR)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    report: dict = {
        "source_model": model_ref, "merged_from_adapter": merged, "device": device, "dtype": str(dtype),
        "threads": threads, "prompts": len(prompts), "max_new_tokens": max_new_tokens, "models": {},
    }
    with torch_threads(threads) if threads else nullcontext():
        measure = dict(tokenizer=tokenizer, prompts=prompts, max_new_tokens=max_new_tokens,
                       system_prompt=system_prompt, dtype=dtype)
        model, figures, baseline_outputs = _load_and_measure(folder, device, **measure)
        report["models"]["baseline"] = {
            "path": folder, "size_on_disk_mib": path_size_mb(folder), **figures, "greedy_token_agreement": 1.0,
        }
        del model
        _free_memory()
        for mode in modes:
            log.info("quantizing %s to %s on %s", folder, mode, device)
            model, figures, outputs = _load_and_measure(folder, device, quantization_config=bnb_config(mode, dtype),
                                                        **measure)
            saved = out / mode
            model.save_pretrained(saved)
            tokenizer.save_pretrained(saved)
            logits = _first_prompt_logits(model, tokenizer, prompts[0], system_prompt)
            del model
            _free_memory()
            reloaded = AutoModelForCausalLM.from_pretrained(saved, device_map=device).eval()
            reload_diff = (_first_prompt_logits(reloaded, tokenizer, prompts[0], system_prompt) - logits).abs().max()
            del reloaded
            _free_memory()
            report["models"][mode] = {
                "path": str(saved), "size_on_disk_mib": path_size_mb(str(saved)), **figures,
                "greedy_token_agreement": _token_agreement(outputs, baseline_outputs),
                "reload_max_abs_logit_diff": float(reload_diff),
            }
    base = report["models"]["baseline"]
    report["ratios"] = {
        mode: {
            "size_on_disk": report["models"][mode]["size_on_disk_mib"] / base["size_on_disk_mib"],
            "parameter_memory": report["models"][mode]["parameter_mib"] / base["parameter_mib"],
            "throughput": report["models"][mode]["tokens_per_second"] / base["tokens_per_second"],
        }
        for mode in modes
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    make_readable(out)
    return report
