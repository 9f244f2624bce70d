"""GGUF export of the response student (response/gguf_export.py): a tiny llama from a config with a real byte-level
BPE chat tokenizer round-trips through transformers' GGUF loader (logits and token ids), other architectures
and tokenizers are refused, and, where llama-cpp-python is installed, llama.cpp loads, quantizes and runs it."""

import json
import shutil
import sys

import pytest
import torch
from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from mangadistill.response import gguf_export
from mangadistill.response.gguf_export import UnsupportedModel, export_gguf

TEXTS = ["is one piece in stock?", "<|im_start|>user\nprice of naruto volume 12345?<|im_end|>\n",
         "Berserk  has\t42 volumes,  right?!"]
# largest |logit difference| after a round trip, for logits of magnitude ~1 (random init, std 0.02 weights):
# f32 is bit-exact; f16 rounds each weight to 11 significant bits; Q8_0 keeps 8 bits per 32-value block
TOLERANCE = {"f32": 0.0, "f16": 2e-3, "q8_0": 2e-2}


@pytest.fixture(scope="module")
def tokenizer():
    return build_chat_tokenizer(PROMPTS + RESPONSES, vocab_size=300)


def _tiny_llama(tokenizer, folder, tied: bool):
    """A 2-layer llama, hidden 64, 4 heads / 2 kv heads (grouped-query attention, as SmolLM2), random weights."""
    return build_tiny_llama(folder, tokenizer, layers=2, hidden=64, intermediate=128, tie_embeddings=tied)


@pytest.fixture(scope="module")
def tiny(tokenizer, tmp_path_factory):
    """Tied input and output embeddings, as SmolLM2."""
    return _tiny_llama(tokenizer, tmp_path_factory.mktemp("tiny-llama"), tied=True)


@pytest.fixture(scope="module")
def untied(tokenizer, tmp_path_factory):
    """Its own output head (GGUF output.weight)."""
    return _tiny_llama(tokenizer, tmp_path_factory.mktemp("tiny-llama-untied"), tied=False)


def _alone(tmp_path, name):
    """A fresh folder for one GGUF file: transformers then reads config, weights and tokenizer from the file
    alone (beside the model's own tokenizer_config.json it would mix in those files)."""
    folder = tmp_path / name.removesuffix(".gguf")
    folder.mkdir()
    return folder / name


def _from_gguf(cls, path, **kwargs):
    return cls.from_pretrained(path.parent, gguf_file=path.name, **kwargs)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize(("heads", "dtype"), [("tiny", "f32"), ("tiny", "f16"), ("tiny", "q8_0"), ("untied", "f32")])
def test_transformers_reads_back_the_same_logits(request, tokenizer, heads, dtype, tmp_path):
    folder = request.getfixturevalue(heads)
    path = export_gguf(folder, _alone(tmp_path, f"model-{dtype}.gguf"), dtype)
    original = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    loaded = _from_gguf(AutoModelForCausalLM, path, dtype=torch.float32).eval()
    ids = tokenizer(" ".join(TEXTS), return_tensors="pt")["input_ids"]
    difference = (_logits(original, ids) - _logits(loaded, ids)).abs().max().item()
    assert difference <= TOLERANCE[dtype]


def test_the_rotary_permutation_is_what_makes_the_round_trip_exact(tiny, tokenizer, monkeypatch, tmp_path):
    """Without the q/k row permutation transformers' loader (which undoes it) scrambles attention."""
    monkeypatch.setattr(gguf_export, "_permute_rotary", lambda weight, n_head: weight)
    path = export_gguf(tiny, _alone(tmp_path, "unpermuted.gguf"), "f32")
    loaded = _from_gguf(AutoModelForCausalLM, path, dtype=torch.float32).eval()
    original = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    ids = tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    assert (_logits(original, ids) - _logits(loaded, ids)).abs().max().item() > 1e-4


def test_the_tokenizer_round_trips(tiny, tokenizer, tmp_path):
    path = export_gguf(tiny, _alone(tmp_path, "model-f16.gguf"), "f16")
    loaded = _from_gguf(AutoTokenizer, path)
    for text in TEXTS:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert loaded.chat_template == tokenizer.chat_template
    assert (loaded.bos_token, loaded.eos_token) == ("<|im_start|>", "<|im_end|>")


def test_another_architecture_is_refused_by_name(tiny, tmp_path):
    folder = tmp_path / "gpt2"
    shutil.copytree(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModel, match=r"model_type 'gpt2'.*maps only llama"):
        export_gguf(folder, tmp_path / "gpt2.gguf")
    assert not (tmp_path / "gpt2.gguf").exists()


def test_a_pre_tokenizer_without_a_llama_cpp_equivalent_is_refused(tiny, tmp_path):
    folder = tmp_path / "whitespace"
    shutil.copytree(tiny, folder)
    tokenizer_json = json.loads((folder / "tokenizer.json").read_text())
    tokenizer_json["pre_tokenizer"] = {"type": "Whitespace"}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    with pytest.raises(UnsupportedModel, match=r"no llama\.cpp equivalent"):
        export_gguf(folder, tmp_path / "whitespace.gguf")


def test_an_unknown_dtype_is_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="choose one of"):
        export_gguf(tiny, tmp_path / "x.gguf", "q4_k")


# --- llama.cpp (llama-cpp-python is an optional extra that CI does not build) -------------------------------


def test_without_llama_cpp_python_the_error_names_the_install(monkeypatch, tiny, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what `import llama_cpp` meets when it is not installed
    with pytest.raises(ImportError, match=r"make gguf.*pip install 'llama-cpp-python==\d"):
        gguf_export.quantize_gguf(tiny / "model.gguf", tmp_path / "model-Q8_0.gguf", "Q8_0")


@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python is optional (`make gguf` builds it from "
                                                   "source, about 5 min); CI does not build llama.cpp")


def _llama(llama_cpp, path):
    return llama_cpp.Llama(str(path), n_ctx=256, n_threads=2, verbose=False, seed=0)


def test_llama_cpp_tokenizes_like_transformers(llama_cpp, tiny, tokenizer, tmp_path):
    llm = _llama(llama_cpp, export_gguf(tiny, tmp_path / "model-f16.gguf", "f16"))
    for text in TEXTS:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text)["input_ids"], text


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_K_M"])
def test_llama_cpp_quantizes_and_runs_the_export(llama_cpp, tiny, tokenizer, quant, tmp_path):
    """llama.cpp's quantizer writes the file, and llama.cpp's next-token logits on it stay close to the
    original model's (measured 0.008 for Q8_0; 0.03 for Q4_K_M, whose 64-wide rows fall back to Q5_0 / Q8_0)."""
    from gguf import GGUFReader

    files = gguf_export.export_student_gguf(tiny, tmp_path, quants=(quant,))
    file_type = GGUFReader(files[quant]).fields["general.file_type"].contents()
    assert file_type == getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    assert files[quant].stat().st_size < files["F16"].stat().st_size
    ids = tokenizer(TEXTS[0])["input_ids"]
    llm = llama_cpp.Llama(str(files[quant]), n_ctx=256, n_threads=2, verbose=False, logits_all=True)
    llm.eval(ids)
    got = torch.tensor(llm.scores[: len(ids)])
    original = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    expected = _logits(original, torch.tensor([ids]))[0]
    assert (got - expected).abs().max().item() <= {"Q8_0": 2e-2, "Q4_K_M": 6e-2}[quant]


def test_quantize_refuses_an_unknown_quant(llama_cpp, tiny, tmp_path):
    with pytest.raises(ValueError, match="no LLAMA_FTYPE_MOSTLY_Q9_9"):
        gguf_export.quantize_gguf(tiny / "missing.gguf", tmp_path / "x.gguf", "Q9_9")
