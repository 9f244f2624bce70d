"""Submit a compiled pipeline to a Kubeflow Pipelines (v2) API server, and wait for its run.

What can be checked here is checked before the server is contacted: the package exists and is a compiled
pipeline, and the parameters match the pipeline's root inputs (unknown names, missing required ones and wrong
types are all named). Errors from the server side say which: `cannot reach KFP at HOST: ...` (nothing
answered), a refused token (PermissionError naming the token's environment variable), or the server's own
message when it rejects the run.

The run executes as `RUNNER_SERVICE_ACCOUNT` by default: the ServiceAccount that manifests/overlays create
(Workload Identity on GKE). Its default pipeline root is the cluster's kfp-launcher ConfigMap unless
`pipeline_root` is given.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mangadistill_components.images import DEFAULT_PINS_FILE, load_pins, pin_images

if TYPE_CHECKING:
    import kfp

PIPELINES_DIR = Path(__file__).resolve().parent
RUNNER_SERVICE_ACCOUNT = "mangadistill-runner"
DEFAULT_EXPERIMENT = "mangadistill"
DEFAULT_TOKEN_ENV = "KFP_TOKEN"
DEFAULT_TIMEOUT_S = 6 * 3600.0
HEALTHZ_PATH = "/apis/v2beta1/healthz"
PROBE_TIMEOUT_S = 10.0
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"})
PIPELINE_SPEC_KEYS = ("pipelineInfo", "root", "deploymentSpec", "schemaVersion")
# parameterType in a compiled spec -> the Python values that fit it (bool is excluded from numbers below)
PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "LIST": (list,),
    "STRUCT": (dict,),
}


class KfpUnreachableError(ConnectionError):
    """Nothing answered at the KFP host (connection refused, DNS failure, TLS failure, timeout)."""


class RunFailedError(RuntimeError):
    """A run that was waited for ended in a state other than SUCCEEDED."""


@dataclass(frozen=True)
class PipelinePackage:
    """A compiled pipeline YAML: its file, its pipelineInfo name and its root input parameters (name -> spec
    with `parameterType`, and `defaultValue`/`isOptional` when it has a default)."""

    path: Path
    name: str
    parameters: dict[str, dict]

    @property
    def required(self) -> list[str]:
        """Root parameters without a default: a run must pass them."""
        return sorted(
            name for name, spec in self.parameters.items()
            if "defaultValue" not in spec and not spec.get("isOptional", False)
        )


def resolve_package(package_path_or_pipeline_name: str) -> Path:
    """A path to a compiled pipeline YAML, or the name of one compiled into pipelines/: `intent_distillation`
    or its short name `intent` (the name `mangadistill run` takes)."""
    ref = package_path_or_pipeline_name
    if ref.endswith((".yaml", ".yml")) or os.sep in ref or "/" in ref:
        candidates = [Path(ref)]
    else:
        candidates = [PIPELINES_DIR / f"{ref}.yaml", PIPELINES_DIR / f"{ref}_distillation.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(path.stem for path in PIPELINES_DIR.glob("*.yaml"))
    raise FileNotFoundError(
        f"pipeline package {ref!r} not found (looked for {', '.join(map(str, candidates))}); pass a compiled "
        f"pipeline YAML (`mangadistill compile` writes them) or one of: {', '.join(known)}"
    )


def load_package(package_path_or_pipeline_name: str) -> PipelinePackage:
    """Read a compiled pipeline YAML; ValueError naming the file when it is not one."""
    path = resolve_package(package_path_or_pipeline_name)
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a compiled pipeline YAML: {err}") from err
    spec = documents[0] if documents else None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: not a compiled pipeline YAML (its first document is not a mapping)")
    missing = [key for key in PIPELINE_SPEC_KEYS if key not in spec]
    if missing:
        raise ValueError(
            f"{path}: not a compiled KFP pipeline (no {', '.join(missing)}); compile the pipeline first "
            "(`mangadistill compile`)"
        )
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return PipelinePackage(path=path, name=spec["pipelineInfo"]["name"], parameters=parameters)


def _fits(value: Any, parameter_type: str) -> bool:
    if parameter_type not in PARAMETER_TYPES:
        return True
    if isinstance(value, bool) and parameter_type != "BOOLEAN":
        return False
    return isinstance(value, PARAMETER_TYPES[parameter_type])


QUANTITIES = {"_cpu_request": re.compile(r"\d+(\.\d+)?m?"), "_cpu_limit": re.compile(r"\d+(\.\d+)?m?"),
              "_memory_request": re.compile(r"\d+(\.\d+)?([EPTGMk]|[EPTGMK]i)?"),
              "_memory_limit": re.compile(r"\d+(\.\d+)?([EPTGMk]|[EPTGMK]i)?")}
"""The Kubernetes quantities a resource parameter (cluster.STAGE_RESOURCES) accepts: CPUs ("2", "500m") and
bytes ("512Mi", "16Gi", "1G")."""


def _quantity_problem(name: str, value: Any) -> str | None:
    for suffix, pattern in QUANTITIES.items():
        if name.endswith(suffix) and isinstance(value, str) and not pattern.fullmatch(value):
            example = "2 or 500m" if "_cpu_" in suffix else "16Gi or 512Mi"
            return f"{name}={value!r} is not a Kubernetes quantity (e.g. {example})"
    return None


def check_parameters(package: PipelinePackage, parameters: dict[str, Any], require_all: bool = True) -> None:
    """ValueError naming every unknown parameter (with the closest accepted name), every missing required one
    (when `require_all`), every wrong type and every resource parameter that is not a Kubernetes quantity."""
    problems = []
    for name in sorted(set(parameters) - set(package.parameters)):
        close = difflib.get_close_matches(name, list(package.parameters), n=1)
        problems.append(f"unknown parameter {name}" + (f" (did you mean {close[0]}?)" if close else ""))
    missing = [name for name in package.required if name not in parameters] if require_all else []
    if missing:
        problems.append(f"missing required parameters {', '.join(missing)}")
    for name, value in sorted(parameters.items()):
        parameter_type = package.parameters.get(name, {}).get("parameterType", "")
        if name in package.parameters and not _fits(value, parameter_type):
            problems.append(f"{name}={value!r} is not a {parameter_type}")
        elif name in package.parameters and (quantity := _quantity_problem(name, value)):
            problems.append(quantity)
    if problems:
        accepted = ", ".join(sorted(package.parameters))
        raise ValueError(f"{package.path} ({package.name}): {'; '.join(problems)}. It accepts: {accepted}")


def _normalise_host(host: str) -> str:
    """The host as kfp.Client uses it: https:// when no scheme is given, no trailing slash."""
    host = host.strip()
    if not host.startswith(("http://", "https://")):
        host = "https://" + host
    return host.rstrip("/")


def probe(host: str, token: str | None, token_env: str = DEFAULT_TOKEN_ENV,
          timeout_s: float = PROBE_TIMEOUT_S) -> dict:
    """GET HOST/apis/v2beta1/healthz (the Bearer token when given) and return its JSON.

    KfpUnreachableError when nothing answers; PermissionError on 401/403; RuntimeError on another HTTP
    status (HOST is then something other than the KFP API, or the API is unwell)."""
    request = urllib.request.Request(host + HEALTHZ_PATH)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # as kfp's client: no env proxies
    try:
        with opener.open(request, timeout=timeout_s) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            given = f"the token in ${token_env}" if token else f"no token (${token_env} is empty)"
            raise PermissionError(f"KFP at {host} refused {given}: HTTP {err.code} {err.reason}") from err
        raise RuntimeError(
            f"KFP at {host} answered HTTP {err.code} {err.reason} on {HEALTHZ_PATH}: is {host} the KFP API "
            "(e.g. http://127.0.0.1:8888 after `kubectl -n kubeflow port-forward svc/ml-pipeline 8888`)?"
        ) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise KfpUnreachableError(f"cannot reach KFP at {host}: {reason}") from err
    except json.JSONDecodeError as err:
        raise RuntimeError(f"KFP at {host}: {HEALTHZ_PATH} did not answer JSON: {err}") from err


@contextmanager
def _server_errors_explained(host: str) -> Iterator[None]:
    """Turn kfp client transport errors into KfpUnreachableError and API errors into a RuntimeError that
    carries the server's message."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as err:
        raise RuntimeError(
            f"KFP at {host} refused the request: HTTP {err.status} {err.reason}: {err.body}"
        ) from err
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise KfpUnreachableError(f"cannot reach KFP at {host}: {err}") from err


def connect(host: str, namespace: str | None = None, token_env: str = DEFAULT_TOKEN_ENV) -> kfp.Client:
    """A kfp.Client for HOST after a healthz probe; the token (if any) from the environment variable
    `token_env`. `namespace` matters in multi-user KFP only (standalone runs in its install namespace)."""
    import kfp

    host = _normalise_host(host)
    token = os.environ.get(token_env) or None
    probe(host, token, token_env)
    with _server_errors_explained(host), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "This client only works with", FutureWarning)
        return kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token)


def run_url(host: str, run_id: str) -> str:
    """The run's page in the KFP UI at HOST (a standalone KFP; behind the Kubeflow central dashboard the same
    page is HOST/_/pipeline/#/runs/details/RUN_ID)."""
    return f"{_normalise_host(host)}/#/runs/details/{run_id}"


def _ignore(message: str) -> None:
    del message


def _wait(client: kfp.Client, host: str, run_id: str, timeout_s: float, poll_s: float,
          progress: Callable[[str], None] = _ignore) -> str:
    """Poll the run until it reaches a terminal state and return that state (SUCCEEDED, FAILED, ...); each change
    of state goes to `progress` as "run RUN_ID: STATE after N s"."""
    started = time.monotonic()
    deadline = started + timeout_s
    last = None
    while True:
        with _server_errors_explained(host):
            state = str(client.get_run(run_id).state or "RUNTIME_STATE_UNSPECIFIED")
        if state != last:
            progress(f"run {run_id}: {state} after {time.monotonic() - started:.0f} s")
            last = state
        if state in TERMINAL_STATES:
            return state
        if time.monotonic() >= deadline:
            raise TimeoutError(f"run {run_id} at {host} is still {state} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def wait_for_run(host: str, run_id: str, timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = 10.0,
                 token_env: str = DEFAULT_TOKEN_ENV, namespace: str | None = None,
                 progress: Callable[[str], None] = _ignore) -> str:
    """Wait for a run to end and return its final state (SUCCEEDED, FAILED, SKIPPED or CANCELED);
    TimeoutError naming the run and its last state after `timeout_s`."""
    client = connect(host, namespace, token_env)
    return _wait(client, _normalise_host(host), run_id, timeout_s, poll_s, progress)


def with_caching(package_text: str, enable_caching: bool) -> str:
    """The compiled package with caching turned on or off for every task, in the root DAG and in every sub-DAG
    (the exit handler's, dsl.If's): kfp.Client's own `enable_caching` reaches only the root DAG's tasks."""
    documents = list(yaml.safe_load_all(package_text))
    spec = documents[0]
    dags = [spec["root"]["dag"], *(component["dag"] for component in spec.get("components", {}).values()
                                   if "dag" in component)]
    for dag in dags:
        for task in dag.get("tasks", {}).values():
            task.setdefault("cachingOptions", {})["enableCache"] = enable_caching
    return yaml.safe_dump_all(documents, sort_keys=False)


def submit(
    package_path_or_pipeline_name: str,
    host: str,
    namespace: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    parameters: dict[str, Any] | None = None,
    token_env: str = DEFAULT_TOKEN_ENV,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    wait: bool = False,
    service_account: str = RUNNER_SERVICE_ACCOUNT,
    pipeline_root: str | None = None,
    poll_s: float = 10.0,
    enable_caching: bool | None = None,
    progress: Callable[[str], None] = _ignore,
    image_registry: str | None = None,
    image_pins: Path = DEFAULT_PINS_FILE,
) -> str:
    """Create a run of a compiled pipeline in `experiment` (created when missing) and return its run id.

    The package and the parameters are checked before the server is contacted. `progress` gets the run's UI
    link once it exists and, with `wait`, every change of state; `wait` blocks until the run ends (at most
    `timeout_s`) and raises RunFailedError unless it SUCCEEDED. enable_caching False reruns every task (None:
    as compiled); an empty `service_account` runs as KFP's default runner; `pipeline_root` None uses the
    cluster's kfp-launcher default. With `image_registry`, the package's stage images are replaced by their
    digests in `image_pins` (`images.load_pins`, written by `make push`) before it is sent.
    """
    package = load_package(package_path_or_pipeline_name)
    arguments = dict(parameters or {})
    check_parameters(package, arguments)
    client = connect(host, namespace, token_env)
    host = _normalise_host(host)
    run_name = run_name or f"{package.name} {datetime.now(UTC):%Y-%m-%d %H:%M:%S}"
    with tempfile.TemporaryDirectory(prefix="mangadistill-submit-") as folder:
        package_path = package.path
        if image_registry or enable_caching is not None:
            text = package.path.read_text()
            if image_registry:
                text = pin_images(text, load_pins(image_pins, image_registry), str(package.path))
            if enable_caching is not None:
                text = with_caching(text, enable_caching)
            package_path = Path(folder, package.path.name)
            package_path.write_text(text)
        with _server_errors_explained(host):
            result = client.create_run_from_pipeline_package(
                str(package_path), arguments=arguments, run_name=run_name, experiment_name=experiment,
                namespace=namespace, pipeline_root=pipeline_root or None, service_account=service_account or None,
                enable_caching=enable_caching,
            )
    run_id = result.run_id
    progress(f"run {run_id} ({run_name}): {run_url(host, run_id)}")
    if wait:
        state = _wait(client, host, run_id, timeout_s, poll_s, progress)
        if state != "SUCCEEDED":
            raise RunFailedError(f"run {run_id} ({run_name}) at {host} ended {state}")
    return run_id
