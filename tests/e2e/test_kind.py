"""End to end on a kind cluster: KFP standalone from manifests/kfp, the project's kind overlay, the stage
images loaded with `kind load docker-image`, and the compiled intent pipeline run with tiny models through
`mangadistill_pipelines.submit`; the run must succeed and leave the int8 model, the report and a well-formed
`distilled_model_eval` event in the cluster's object store, under the kind overlay's pipeline root.

Opt-in, because it creates a cluster and takes tens of minutes: MANGADISTILL_E2E=1 (`make e2e`, which also
builds the stage images and brings the cluster up). Skips, saying why, when kind or a Docker engine is
missing. Needs the stage images in the local Docker engine (`make images`) and network access (the KFP
install, KFP's own images, and MC_IMAGE, the S3 client used to put the data in and read the outputs back).

How tiny models reach the pods: the test builds one thin image per stage, FROM the real stage image, that
adds a tiny teacher classifier and a tiny student encoder under /opt/mangadistill-e2e, and compiles the
pipeline with MANGADISTILL_IMAGE_REGISTRY pointing at those images (the pipeline module is unchanged). The run
lowers every stage's CPU and memory requests through the pipeline's resource parameters so that a
laptop-sized kind node can schedule the tasks; GPUs are off (accelerator_count 0, no GPU node selector or
tolerations).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mangadistill import __version__
from mangadistill.core import storage
from mangadistill.sample_data.messages import build_sample_splits
from mangadistill_components.images import STAGES, stage_image
from mangadistill_pipelines.submit import KfpUnreachableError, probe, submit, wait_for_run

pytestmark = [pytest.mark.slow, pytest.mark.docker]

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("KIND_CLUSTER_NAME", "mangadistill")
CONTEXT = f"kind-{CLUSTER}"
KFP_NAMESPACE = "kubeflow"
E2E_REGISTRY = "localhost/mangadistill-e2e"
IN_IMAGE = "/opt/mangadistill-e2e"
MC_IMAGE = os.environ.get("MC_IMAGE", "quay.io/minio/mc:latest")
OBJECT_STORE = "http://minio-service.kubeflow:9000"  # KFP's in-cluster S3 endpoint (minio:// pipeline roots)
BUCKET = "mlpipeline"
KIND_PIPELINE_ROOT_PREFIX = "v2/artifacts/mangadistill"  # overlays/kind: minio://mlpipeline/<this>
RUN_TIMEOUT_S = float(os.environ.get("E2E_RUN_TIMEOUT_S", 3600))
SMALL_REQUESTS = {f"{stage}_{field}": value for stage in ("labeling", "data", "training", "quantization", "gate")
                  for field, value in (("cpu_request", "250m"), ("memory_request", "512Mi"))}
"""Pipeline arguments (cluster.STAGE_RESOURCES) that fit every task on a laptop-sized kind node."""
TITLES = [
    {"title": "Nana", "authors": ["Ai Yazawa"], "genres": ["romance", "drama"], "volumes": 21},
    {"title": "Monster", "authors": ["Naoki Urasawa"], "genres": ["mystery", "thriller"], "volumes": 18},
    {"title": "Yotsuba&!", "authors": ["Kiyohiko Azuma"], "genres": ["comedy", "slice of life"],
     "volumes": 15},
]


def _docker_engine_reachable() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


if shutil.which("kind") is None:
    pytest.skip("kind not found on PATH: the kind end-to-end test needs kind (https://kind.sigs.k8s.io)",
                allow_module_level=True)
if not _docker_engine_reachable():
    pytest.skip("no Docker engine reachable (`docker info` fails): kind runs its nodes in Docker",
                allow_module_level=True)
if os.environ.get("MANGADISTILL_E2E") != "1":
    pytest.skip("set MANGADISTILL_E2E=1 to run the kind end-to-end test (`make e2e`): it creates a cluster "
                "and takes tens of minutes", allow_module_level=True)


def run(*command: str, timeout: float = 600, input_text: str | None = None) -> str:
    """Run a command; fail the test with its output when it exits non-zero."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=input_text,
                            cwd=REPO_ROOT, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def kubectl(*args: str, timeout: float = 600) -> str:
    return run("kubectl", "--context", CONTEXT, "-n", KFP_NAMESPACE, *args, timeout=timeout)


@pytest.fixture(scope="module")
def cluster() -> str:
    """The kind cluster with KFP and the kind overlay (hack/kind-up.sh: created or reused, applied)."""
    run("hack/kind-up.sh", timeout=45 * 60)
    return CONTEXT


@pytest.fixture(scope="module")
def kfp_host(cluster: str) -> Iterator[str]:
    """The KFP API on 127.0.0.1 through `kubectl port-forward svc/ml-pipeline`."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    forward = subprocess.Popen(
        ["kubectl", "--context", cluster, "-n", KFP_NAMESPACE, "port-forward", "svc/ml-pipeline",
         f"{port}:8888"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    host = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                probe(host, token=None)
                break
            except KfpUnreachableError:
                if forward.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the KFP API did not answer through port-forward: {forward.stderr.read()}")
                time.sleep(1)
        yield host
    finally:
        forward.terminate()
        forward.wait(timeout=30)


def _readable_by_everyone(folder: Path) -> None:
    """Docker's classic builder keeps the context's modes; the stage images run as a non-root user."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.fixture(scope="module")
def e2e_images(cluster: str, tiny_intent_classifier: Path, tiny_encoder: Path,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Stage -> image: each real stage image plus the tiny models under IN_IMAGE, loaded into the cluster."""
    for stage in STAGES:
        if subprocess.run(["docker", "image", "inspect", stage_image(stage)], capture_output=True).returncode:
            pytest.fail(f"stage image {stage_image(stage)} is not in the local Docker engine: `make images`")
    context = tmp_path_factory.mktemp("e2e-image")
    shutil.copytree(tiny_intent_classifier, context / "teacher")
    shutil.copytree(tiny_encoder, context / "student")
    (context / "Dockerfile").write_text(
        f"ARG STAGE_IMAGE\nFROM ${{STAGE_IMAGE}}\n"
        f"COPY teacher {IN_IMAGE}/teacher\nCOPY student {IN_IMAGE}/student\n"
    )
    _readable_by_everyone(context)
    images = {stage: f"{E2E_REGISTRY}/mangadistill-{stage}:{__version__}" for stage in STAGES}
    for stage, image in images.items():
        run("docker", "build", "--build-arg", f"STAGE_IMAGE={stage_image(stage)}", "-t", image, str(context))
    run("hack/kind-load-images.sh", *images.values(), timeout=30 * 60)
    return images


@pytest.fixture(scope="module")
def e2e_package(e2e_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The intent pipeline compiled against the e2e images."""
    package = tmp_path_factory.mktemp("e2e-package") / "intent_distillation.yaml"
    compile_code = (
        "import sys\nfrom kfp import compiler\n"
        "from mangadistill_pipelines.intent_distillation import intent_distillation\n"
        "compiler.Compiler().compile(intent_distillation, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", compile_code, str(package)], check=True, cwd=REPO_ROOT,
                   env={**os.environ, "MANGADISTILL_IMAGE_REGISTRY": E2E_REGISTRY})
    spec = next(yaml.safe_load_all(package.read_text()))
    executors = spec["deploymentSpec"]["executors"]
    used = {executor["container"]["image"] for executor in executors.values() if "container" in executor}
    assert used == set(e2e_images.values()), f"the e2e package does not use the e2e images: {used}"
    return package


class ObjectStore:
    """KFP's in-cluster S3 store through an `mc` pod in the KFP namespace (its network policy admits pods of
    the same namespace), with the credentials of KFP's mlpipeline-minio-artifact secret."""

    def __init__(self, pod: str):
        self.pod = pod

    def mc(self, *args: str, timeout: float = 300) -> str:
        return kubectl("exec", self.pod, "--", "mc", *args, timeout=timeout)

    def put(self, local: Path, key: str) -> str:
        """Upload `local` as BUCKET/key and return its minio:// URI."""
        kubectl("cp", str(local), f"{self.pod}:/tmp/{local.name}")
        self.mc("cp", f"/tmp/{local.name}", f"kfp/{BUCKET}/{key}")
        return f"minio://{BUCKET}/{key}"

    def find(self, prefix: str) -> list[str]:
        """Keys under BUCKET/prefix."""
        listing = self.mc("find", f"kfp/{BUCKET}/{prefix}")
        return [line.removeprefix(f"kfp/{BUCKET}/") for line in listing.splitlines() if line.strip()]

    def cat(self, key: str) -> str:
        return self.mc("cat", f"kfp/{BUCKET}/{key}")


@pytest.fixture(scope="module")
def object_store(cluster: str) -> Iterator[ObjectStore]:
    pod = f"mangadistill-e2e-mc-{uuid.uuid4().hex[:8]}"
    kubectl("run", pod, f"--image={MC_IMAGE}", "--restart=Never", "--command", "--", "sleep", "7200")
    try:
        kubectl("wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=300s", timeout=330)
        secret = json.loads(kubectl("get", "secret", "mlpipeline-minio-artifact", "-o", "json"))["data"]
        access, key = (base64.b64decode(secret[name]).decode() for name in ("accesskey", "secretkey"))
        store = ObjectStore(pod)
        store.mc("alias", "set", "kfp", OBJECT_STORE, access, key)
        yield store
    finally:
        kubectl("delete", "pod", pod, "--wait=false")


@pytest.fixture(scope="module")
def data_uris(object_store: ObjectStore, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A small production log and eval split, uploaded; name -> minio:// URI."""
    folder = tmp_path_factory.mktemp("e2e-data")
    splits = build_sample_splits(seed=3, n_labelled=40, n_production=120, n_eval=60, titles=TITLES)
    prefix = f"mangadistill-e2e/{uuid.uuid4().hex[:8]}"
    uris = {}
    for name in ("production_log", "eval"):
        local = folder / f"{name}.parquet"
        storage.write_table(splits[name], str(local))
        uris[name] = object_store.put(local, f"{prefix}/{local.name}")
    return uris


def _diagnostics(run_id: str) -> str:
    """The run's pods and the logs of the failed ones, for the failure message."""
    pods = kubectl("get", "pods", "-o", "wide")
    failed = kubectl("get", "pods", "--field-selector=status.phase=Failed", "-o", "name").split()
    logs = [f"--- {pod}\n" + subprocess.run(
        ["kubectl", "--context", CONTEXT, "-n", KFP_NAMESPACE, "logs", pod, "--all-containers", "--tail=60"],
        capture_output=True, text=True, check=False).stdout for pod in failed]
    return f"run {run_id}\n{pods}\n" + "\n".join(logs)


def test_intent_pipeline_runs_on_kind_and_leaves_its_outputs(
    kfp_host: str, e2e_package: Path, data_uris: dict[str, str], object_store: ObjectStore
) -> None:
    run_id = submit(
        str(e2e_package), kfp_host, experiment="mangadistill-e2e", run_name=f"e2e-{uuid.uuid4().hex[:8]}",
        parameters={
            "production_log_uri": data_uris["production_log"], "eval_uri": data_uris["eval"],
            "teacher_model": f"{IN_IMAGE}/teacher", "student_model": f"{IN_IMAGE}/student",
            "adjudicator": "none", "epochs": 1,
            "accelerator_count": 0, "gpu_node_selector": {}, "gpu_tolerations": [], **SMALL_REQUESTS,
        },
    )
    state = wait_for_run(kfp_host, run_id, timeout_s=RUN_TIMEOUT_S, poll_s=15)
    assert state == "SUCCEEDED", _diagnostics(run_id)

    keys = [key for key in object_store.find(KIND_PIPELINE_ROOT_PREFIX) if run_id in key]
    assert keys, f"nothing of run {run_id} under minio://{BUCKET}/{KIND_PIPELINE_ROOT_PREFIX} (the kind root)"
    assert any(key.endswith("model.int8.onnx") for key in keys), keys
    assert any(key.endswith("/report") for key in keys), keys
    (event_key,) = [key for key in keys if key.endswith("/event")]
    event = json.loads(object_store.cat(event_key))
    assert event["event"] == "distilled_model_eval"
    assert isinstance(event["promote"], bool)
    assert event["gates"] and set(event["gates"]) <= set(event["thresholds"])
