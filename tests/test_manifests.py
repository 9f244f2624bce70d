"""The Kubernetes manifests under manifests/.

Every local kustomization renders offline with `kubectl kustomize` and every rendered resource validates
against the Kubernetes schemas (kubernetes-validate, strict: an unknown field fails); the overlays carry their
cluster's settings; no file holds a secret value other than an obvious placeholder.

The KFP install (manifests/kfp, manifests/kfp/cluster-scoped) is a remote base on github.com: it is not
rendered offline (its render test skips and says so); its pin to the kfp SDK version is checked instead.

KServe InferenceServices (manifests/serving) are custom resources, which kubernetes-validate has no schema for:
their predictor is validated as the Pod KServe makes of it (every Kubernetes field strict, the KServe-only
fields taken out first and checked by name), and the serving settings the pipelines rely on are asserted.
"""

from __future__ import annotations

import base64
import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import kubernetes_validate
import pytest
import yaml

from mangadistill_pipelines.submit import RUNNER_SERVICE_ACCOUNT

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = REPO_ROOT / "manifests"
KUBECTL = shutil.which("kubectl")
K8S_SCHEMA_VERSION = "1.33.0"
RUN_NAMESPACE = "kubeflow"  # KFP standalone runs every pipeline in its own install namespace
WORKLOAD_IDENTITY = "iam.gke.io/gcp-service-account"
CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
PLACEHOLDER = re.compile(r"REPLACE-WITH|your-project-id", re.IGNORECASE)
KFP_REPO_URL = "https://github.com/kubeflow/pipelines//manifests/kustomize/"

SECRET_ASSIGNMENT = re.compile(
    r"^[ \t]*(?P<name>[A-Za-z0-9_]*(?:KEY|TOKEN|SECRET|PASSWORD)[A-Za-z0-9_]*)[ \t]*[=:][ \t]*(?P<value>\S+)",
    re.IGNORECASE | re.MULTILINE,
)
REFERENCE_FIELDS = {"key", "secretKeyRef"}
"""Kubernetes fields that name a Secret's key (secretKeyRef: {name, key}) or hold a reference, never a value."""
CREDENTIAL_SHAPES = {
    "OpenAI-style API key": re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),
    "AWS access key id": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\"private_key\"\s*:"),
}

pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not found on PATH: cannot render kustomizations"
)


KSERVE_API = "serving.kserve.io/v1beta1"
KSERVE_COMPONENT_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency",
                           "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
                           "deploymentStrategy"}
"""PredictorSpec fields that are KServe's (ComponentExtensionSpec), not the Pod's."""
KSERVE_MODEL_FIELDS = {"modelFormat", "runtime", "storageUri", "protocolVersion"}
"""ModelSpec fields that are KServe's, not the container's."""
SERVED = {"mangadistill-teacher": "teacher_base_url", "mangadistill-judge": "judge_base_url"}
"""The InferenceServices manifests/serving holds, and the pipeline parameter that points at each."""


def served_base_url(name: str) -> str:
    """The in-cluster OpenAI-compatible base URL of a RawDeployment InferenceService on the HF runtime."""
    return f"http://{name}-predictor.{RUN_NAMESPACE}.svc.cluster.local/openai/v1"


def predictor_pod(service: dict) -> dict:
    """The Pod KServe runs for an InferenceService's predictor: its pod fields, and its model as the one
    container (name and image come from the serving runtime)."""
    predictor = dict(service["spec"]["predictor"])
    model = predictor.pop("model")
    pod_spec = {key: value for key, value in predictor.items() if key not in KSERVE_COMPONENT_FIELDS}
    container = {key: value for key, value in model.items() if key not in KSERVE_MODEL_FIELDS}
    pod_spec["containers"] = [{"name": "kserve-container", "image": "runtime-image", **container}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": service["metadata"]["name"]}, "spec": pod_spec}


def validate_resource(resource: dict) -> None:
    """kubernetes-validate, strict; an InferenceService through `predictor_pod`."""
    if resource["apiVersion"] == KSERVE_API and resource["kind"] == "InferenceService":
        assert set(resource["spec"]) == {"predictor"}, sorted(resource["spec"])
        assert set(resource["spec"]["predictor"]["model"]) - {"args", "env", "resources"} <= KSERVE_MODEL_FIELDS
        resource = predictor_pod(resource)
    kubernetes_validate.validate(resource, K8S_SCHEMA_VERSION, strict=True)


def kustomization_dirs() -> list[Path]:
    """Every folder under manifests/ that holds a kustomization.yaml."""
    return sorted(path.parent for path in MANIFESTS.rglob("kustomization.yaml"))


def remote_resources(directory: Path) -> list[str]:
    """The entries of `resources:` that point outside this checkout (URLs, go-getter paths)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    resources = kustomization.get("resources", [])
    return [ref for ref in resources if "://" in ref or ref.startswith("github.com/")]


def relative(directory: Path) -> str:
    return str(directory.relative_to(MANIFESTS))


def render(directory: Path) -> list[dict]:
    """`kubectl kustomize DIR` as a list of resources; the command's stderr in the failure message."""
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def manifests_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifests/ copied, with each git-ignored `X.env` filled from its checked-in `X.env.example`."""
    copy = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(MANIFESTS, copy)
    for example in copy.rglob("*.env.example"):
        example.with_suffix("").write_text(example.read_text())
    return copy


@pytest.fixture(scope="session")
def rendered(manifests_copy: Path) -> dict[str, list[dict]]:
    """Relative folder -> rendered resources, for every kustomization without a remote base."""
    return {
        relative(directory): render(manifests_copy / relative(directory))
        for directory in kustomization_dirs()
        if not remote_resources(directory)
    }


def the_one(resources: list[dict], kind: str, name: str) -> dict:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def test_the_project_kustomizations_are_all_found() -> None:
    found = {relative(directory) for directory in kustomization_dirs()}
    expected = {"base", "overlays/kind", "overlays/gke", "secrets/teacher-api", "kfp", "kfp/cluster-scoped",
                "serving"}
    assert expected <= found


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=relative)
def test_kustomization_renders_and_every_resource_validates(
    directory: Path, rendered: dict[str, list[dict]]
) -> None:
    if remote_resources(directory):
        pytest.skip(f"{relative(directory)} has a remote base ({', '.join(remote_resources(directory))}): "
                    "rendering needs git and github.com, so it is not rendered offline")
    resources = rendered[relative(directory)]
    assert resources, f"{relative(directory)} rendered nothing"
    for resource in resources:
        where = f"{relative(directory)}: {resource['kind']}/{resource['metadata']['name']}"
        try:
            validate_resource(resource)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{where} does not validate against Kubernetes {K8S_SCHEMA_VERSION}: {err.message}")
        if resource["kind"] not in CLUSTER_SCOPED_KINDS:
            namespace = resource["metadata"].get("namespace")
            assert namespace == RUN_NAMESPACE, f"{where} is in {namespace}, not {RUN_NAMESPACE}"
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mangadistill", where


@pytest.mark.parametrize(("folder", "upstream_path"), [
    ("kfp", "env/platform-agnostic"),
    ("kfp/cluster-scoped", "cluster-scoped-resources"),
])
def test_kfp_install_is_pinned_to_the_sdk_version(folder: str, upstream_path: str) -> None:
    (url,) = remote_resources(MANIFESTS / folder)
    assert url.startswith(KFP_REPO_URL + upstream_path + "?"), url
    assert parse_qs(urlparse(url).query)["ref"] == [importlib.metadata.version("kfp")], (
        f"manifests/{folder} installs KFP {url.rpartition('ref=')[2]} but the project uses the kfp SDK "
        f"{importlib.metadata.version('kfp')}: bump the ref with the SDK"
    )


def test_base_holds_placeholders_that_the_overlays_replace(rendered: dict[str, list[dict]]) -> None:
    base = rendered["base"]
    runner = the_one(base, "ServiceAccount", RUNNER_SERVICE_ACCOUNT)
    assert PLACEHOLDER.search(runner["metadata"]["annotations"][WORKLOAD_IDENTITY])
    assert PLACEHOLDER.search(the_one(base, "ConfigMap", "kfp-launcher")["data"]["defaultPipelineRoot"])


@pytest.mark.parametrize("overlay", ["overlays/kind", "overlays/gke"])
def test_the_runner_that_submit_names_exists_and_has_kfp_runner_rights(
    overlay: str, rendered: dict[str, list[dict]]
) -> None:
    resources = rendered[overlay]
    the_one(resources, "ServiceAccount", RUNNER_SERVICE_ACCOUNT)
    binding = the_one(resources, "RoleBinding", RUNNER_SERVICE_ACCOUNT)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pipeline-runner"
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": RUNNER_SERVICE_ACCOUNT, "namespace": RUN_NAMESPACE}
    ]


def test_kind_overlay_uses_the_in_cluster_object_store_and_no_workload_identity(
    rendered: dict[str, list[dict]],
) -> None:
    resources = rendered["overlays/kind"]
    runner = the_one(resources, "ServiceAccount", RUNNER_SERVICE_ACCOUNT)
    assert WORKLOAD_IDENTITY not in runner["metadata"].get("annotations", {})
    root = the_one(resources, "ConfigMap", "kfp-launcher")["data"]["defaultPipelineRoot"]
    assert root.startswith("minio://mlpipeline/"), root


def test_the_pod_check_of_an_inference_service_catches_a_bad_kubernetes_field(rendered: dict[str, list[dict]]) -> None:
    service = the_one(rendered["serving"], "InferenceService", "mangadistill-judge")
    broken = yaml.safe_load(yaml.safe_dump(service))
    broken["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"] = {"cores": 8}  # not a quantity
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_resource(broken)
    broken = yaml.safe_load(yaml.safe_dump(service))
    broken["spec"]["predictor"]["tolerations"][0]["efect"] = "NoSchedule"  # a typo: strict refuses it
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_resource(broken)


def _arguments(service: dict) -> dict[str, str]:
    """The runtime arguments of an InferenceService's model, `--name=value` (a bare flag: "")."""
    pairs = (arg.removeprefix("--").partition("=") for arg in service["spec"]["predictor"]["model"]["args"])
    return {name: value for name, _, value in pairs}


@pytest.mark.parametrize("name", sorted(SERVED))
def test_the_teacher_and_judge_are_served_by_vllm_behind_the_openai_api_the_pipelines_call(
    name: str, rendered: dict[str, list[dict]]
) -> None:
    service = the_one(rendered["serving"], "InferenceService", name)
    assert service["apiVersion"] == KSERVE_API
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "huggingface"}  # KServe's Hugging Face runtime ...
    arguments = _arguments(service)
    assert arguments["backend"] == "vllm"  # ... on its vLLM engine, never the transformers fallback
    assert arguments["model_name"] == name  # the model name the chat API answers to
    assert "/" in arguments["model_id"]  # a Hub id (or give storageUri instead)
    gpus = int(model["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus == int(model["resources"]["requests"]["nvidia.com/gpu"]) == int(
        arguments.get("tensor-parallel-size", 1))  # every GPU the pod holds is used by the engine
    assert service["spec"]["predictor"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    token = next(env for env in model["env"] if env["name"] == "HF_TOKEN")["valueFrom"]["secretKeyRef"]
    assert token["optional"] is True and "value" not in token  # a reference, never a value
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"{SERVED[name]}={served_base_url(name)}" in readme  # documented: only the base URL changes


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def test_gke_overlay_takes_workload_identity_and_gs_root_from_its_settings(
    rendered: dict[str, list[dict]],
) -> None:
    settings = read_env_file(MANIFESTS / "overlays/gke/settings.env")
    resources = rendered["overlays/gke"]
    runner = the_one(resources, "ServiceAccount", RUNNER_SERVICE_ACCOUNT)
    google_account = runner["metadata"]["annotations"][WORKLOAD_IDENTITY]
    assert google_account == settings["GCP_SERVICE_ACCOUNT"]
    assert re.fullmatch(r"[a-z][-a-z0-9]*@[a-z][-a-z0-9]*\.iam\.gserviceaccount\.com", google_account)
    root = the_one(resources, "ConfigMap", "kfp-launcher")["data"]["defaultPipelineRoot"]
    assert root == settings["PIPELINE_ROOT"] and root.startswith("gs://"), root
    quota = the_one(resources, "ResourceQuota", "mangadistill-gpu")
    assert int(quota["spec"]["hard"]["requests.nvidia.com/gpu"]) >= 1
    assert not [r for r in resources if r["metadata"]["name"] == "mangadistill-gke-settings"], (
        "the settings ConfigMap is local-config: it must not be applied"
    )


def test_teacher_secret_renders_from_the_ignored_env_file(rendered: dict[str, list[dict]]) -> None:
    secret = the_one(rendered["secrets/teacher-api"], "Secret", "mangadistill-teacher-api")
    assert set(secret["data"]) == {"TEACHER_API_KEY"}
    assert PLACEHOLDER.search(base64.b64decode(secret["data"]["TEACHER_API_KEY"]).decode())
    env_file = MANIFESTS / "secrets/teacher-api/teacher-api.env"
    if shutil.which("git") is None:
        pytest.skip("git not found: cannot check that teacher-api.env is ignored")
    ignored = subprocess.run(["git", "-C", str(REPO_ROOT), "check-ignore", "-q", str(env_file)], check=False)
    assert ignored.returncode == 0, f"{env_file} must be git-ignored: it holds the real key"


def secret_findings(text: str) -> list[str]:
    """What in `text` looks like a real secret: a KEY/TOKEN/SECRET/PASSWORD assignment whose value is not a
    placeholder, a value of a Secret manifest that is not a placeholder, or a known credential shape."""
    findings = [
        f"{match['name']}={match['value']}"
        for match in SECRET_ASSIGNMENT.finditer(text)
        if not PLACEHOLDER.search(match["value"]) and match["name"] not in REFERENCE_FIELDS
    ]
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]
    except yaml.YAMLError:
        documents = []
    for doc in documents:
        if doc.get("kind") != "Secret":
            continue
        values = [base64.b64decode(v).decode(errors="replace") for v in (doc.get("data") or {}).values()]
        values += [str(v) for v in (doc.get("stringData") or {}).values()]
        findings += [f"Secret value {value!r}" for value in values if not PLACEHOLDER.search(value)]
    findings += [label for label, shape in CREDENTIAL_SHAPES.items() if shape.search(text)]
    return findings


def committable_files(folder: Path) -> list[Path]:
    """Files under `folder` that git would commit (tracked, or untracked and not ignored)."""
    if shutil.which("git") is None:
        pytest.skip("git not found: cannot tell ignored files (a local teacher-api.env) from committed ones")
    listing = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z",
         str(folder)],
        capture_output=True, text=True, check=True,
    )
    return [REPO_ROOT / name for name in listing.stdout.split("\0") if name and (REPO_ROOT / name).is_file()]


def test_the_secret_detector_catches_real_looking_values() -> None:
    assert secret_findings("TEACHER_API_KEY=REPLACE-WITH-YOUR-TEACHER-API-KEY") == []
    assert secret_findings("TEACHER_API_KEY=hunter2")
    assert secret_findings("          key: HF_TOKEN\n") == []  # a secretKeyRef names the key, holds no value
    assert secret_findings("HF_TOKEN: hf_abcdefgh\n") and secret_findings("api_key: hunter2\n")
    assert secret_findings("note: sk-" + "a1B2" * 8)
    real = base64.b64encode(b"hunter2").decode()
    assert secret_findings(f"apiVersion: v1\nkind: Secret\nmetadata: {{name: x}}\ndata:\n  K: {real}\n")


def test_no_file_under_manifests_holds_a_real_secret() -> None:
    files = committable_files(MANIFESTS)
    assert any(path.name == "teacher-api.env.example" for path in files)
    findings = {str(path.relative_to(REPO_ROOT)): secret_findings(path.read_text()) for path in files}
    assert not {path: found for path, found in findings.items() if found}
