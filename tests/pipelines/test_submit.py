"""pipelines/submit.py against a real local HTTP server on 127.0.0.1 that implements the part of the KFP
v2beta1 REST API kfp.Client uses to start a run from a package: GET /apis/v2beta1/healthz, GET and POST
/apis/v2beta1/experiments, POST /apis/v2beta1/runs (the compiled spec travels inline in the run: kfp.Client
uploads no pipeline for create_run_from_pipeline_package) and GET /apis/v2beta1/runs/{id}."""

from __future__ import annotations

import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from mangadistill_pipelines import submit as submit_module
from mangadistill_pipelines.submit import (
    RUNNER_SERVICE_ACCOUNT,
    KfpUnreachableError,
    RunFailedError,
    check_parameters,
    load_package,
    submit,
    wait_for_run,
)

INTENT_PACKAGE = Path(__file__).resolve().parents[2] / "pipelines" / "intent_distillation.yaml"
API = "/apis/v2beta1"
TOKEN = "test-token-not-a-secret"
REQUIRED = {
    "production_log_uri": "gs://bucket/log.parquet",
    "eval_uri": "gs://bucket/eval.parquet",
    "teacher_model": "gs://bucket/teacher",
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: dict | None


@dataclass
class FakeKfp:
    """State of the fake API: what arrived, the experiments and runs it holds, and the states a run reports
    on successive GETs (the last one repeats)."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    run_states: list[str] = field(default_factory=lambda: ["RUNNING", "SUCCEEDED"])
    healthz_status: int = 200
    create_run_status: int = 200

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]


def _handler(fake: FakeKfp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _record(self) -> Request:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            headers = {name.lower(): value for name, value in self.headers.items()}
            request = Request(self.command, url.path, parse_qs(url.query), headers, body)
            fake.requests.append(request)
            return request

        def _answer(self, payload: dict, status: int = 200) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            request = self._record()
            if request.path == f"{API}/healthz":
                if fake.healthz_status != 200:
                    self._answer({"error": "unauthorized"}, fake.healthz_status)
                    return
                self._answer({"multi_user": False})
            elif request.path == f"{API}/experiments":
                wanted = json.loads(request.query["filter"][0])["predicates"][0]["stringValue"]
                found = [e for e in fake.experiments.values() if e["display_name"] == wanted]
                self._answer({"experiments": found, "total_size": len(found)} if found else {})
            elif request.path.startswith(f"{API}/runs/"):
                run = fake.runs[request.path.rsplit("/", 1)[1]]
                state = fake.run_states.pop(0) if len(fake.run_states) > 1 else fake.run_states[0]
                self._answer({**run, "state": state})
            else:
                self._answer({"error": f"not implemented: {request.path}"}, 404)

        def do_POST(self) -> None:
            request = self._record()
            if request.path == f"{API}/experiments":
                experiment = {**request.body, "experiment_id": str(uuid.uuid4())}
                fake.experiments[experiment["experiment_id"]] = experiment
                self._answer(experiment)
            elif request.path == f"{API}/runs":
                if fake.create_run_status != 200:
                    self._answer({"error": "invalid pipeline spec", "code": 3}, fake.create_run_status)
                    return
                run = {**request.body, "run_id": str(uuid.uuid4()), "state": "PENDING"}
                fake.runs[run["run_id"]] = run
                self._answer(run)
            else:
                self._answer({"error": f"not implemented: {request.path}"}, 404)

    return Handler


@pytest.fixture
def kfp_server() -> Iterator[FakeKfp]:
    fake = FakeKfp()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """http://127.0.0.1:PORT where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KFP_TOKEN", raising=False)


def test_submit_sends_the_package_the_parameters_and_the_token(
    kfp_server: FakeKfp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    parameters = {**REQUIRED, "beta": 0.3, "epochs": 1, "adjudicator": "none"}
    run_id = submit(str(INTENT_PACKAGE), kfp_server.url, experiment="intent-exp", run_name="run-1",
                    parameters=parameters, wait=True, poll_s=0.01, timeout_s=30)

    (create,) = kfp_server.calls("POST", f"{API}/runs")
    assert run_id in kfp_server.runs
    spec, *platform = yaml.safe_load_all(INTENT_PACKAGE.read_text())
    # the spec travels unchanged, with its kfp-kubernetes platform spec (secret, GPU placement) if any
    expected = {"pipeline_spec": spec, "platform_spec": platform[0]} if platform else spec
    assert create.body["pipeline_spec"] == expected
    assert create.body["runtime_config"]["parameters"] == parameters
    assert create.body["display_name"] == "run-1"
    assert create.body["service_account"] == RUNNER_SERVICE_ACCOUNT
    (experiment,) = kfp_server.experiments.values()
    assert experiment["display_name"] == "intent-exp"
    assert create.body["experiment_id"] == experiment["experiment_id"]
    assert kfp_server.calls("GET", f"{API}/runs/{run_id}"), "wait=True polls the run"
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in kfp_server.requests)


def test_an_existing_experiment_is_reused_and_no_token_sends_no_header(kfp_server: FakeKfp) -> None:
    kfp_server.experiments["e1"] = {"experiment_id": "e1", "display_name": "mangadistill"}
    submit("intent", kfp_server.url, parameters=REQUIRED, service_account="", pipeline_root="gs://b/root")

    assert not kfp_server.calls("POST", f"{API}/experiments")
    (create,) = kfp_server.calls("POST", f"{API}/runs")
    assert create.body["experiment_id"] == "e1"
    assert create.body["runtime_config"]["pipeline_root"] == "gs://b/root"
    assert "service_account" not in create.body
    assert not any("authorization" in r.headers for r in kfp_server.requests)


def test_wait_for_run_returns_the_final_state(kfp_server: FakeKfp) -> None:
    kfp_server.run_states = ["PENDING", "RUNNING", "FAILED"]
    run_id = submit("intent", kfp_server.url, parameters=REQUIRED)
    assert wait_for_run(kfp_server.url, run_id, timeout_s=30, poll_s=0.01) == "FAILED"
    assert len(kfp_server.calls("GET", f"{API}/runs/{run_id}")) == 3


def test_submit_and_wait_raises_when_the_run_fails(kfp_server: FakeKfp) -> None:
    kfp_server.run_states = ["RUNNING", "FAILED"]
    with pytest.raises(RunFailedError, match=r"run .* ended FAILED"):
        submit("intent", kfp_server.url, parameters=REQUIRED, run_name="doomed", wait=True, poll_s=0.01)


def test_waiting_past_the_timeout_names_the_run_and_its_state(kfp_server: FakeKfp) -> None:
    kfp_server.run_states = ["RUNNING"]
    run_id = submit("intent", kfp_server.url, parameters=REQUIRED)
    with pytest.raises(TimeoutError, match=rf"run {run_id} .* still RUNNING"):
        wait_for_run(kfp_server.url, run_id, timeout_s=0.05, poll_s=0.01)


def test_an_unreachable_host_is_named(closed_port_url: str) -> None:
    with pytest.raises(KfpUnreachableError, match=rf"cannot reach KFP at {closed_port_url}: "):
        submit(str(INTENT_PACKAGE), closed_port_url, parameters=REQUIRED)


def test_a_refused_token_names_the_token_variable(
    kfp_server: FakeKfp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_KFP_TOKEN", TOKEN)
    kfp_server.healthz_status = 401
    with pytest.raises(PermissionError, match=r"refused the token in \$MY_KFP_TOKEN: HTTP 401"):
        submit("intent", kfp_server.url, parameters=REQUIRED, token_env="MY_KFP_TOKEN")
    assert not kfp_server.calls("POST", f"{API}/runs")


def test_a_rejected_run_carries_the_server_message(kfp_server: FakeKfp) -> None:
    kfp_server.create_run_status = 400
    with pytest.raises(RuntimeError, match=r"HTTP 400.*invalid pipeline spec"):
        submit("intent", kfp_server.url, parameters=REQUIRED)


def test_a_missing_package_is_named_and_the_server_is_not_contacted(
    kfp_server: FakeKfp, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        submit(str(missing), kfp_server.url, parameters=REQUIRED)
    with pytest.raises(FileNotFoundError, match=r"'sentiment' not found.*intent_distillation"):
        submit("sentiment", kfp_server.url, parameters=REQUIRED)
    assert kfp_server.requests == []


@pytest.mark.parametrize(("content", "reason"), [
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "no pipelineInfo, root, deploymentSpec"),
    ("pipelineInfo: [unclosed\n", "not a compiled pipeline YAML"),
    ("- just\n- a list\n", "first document is not a mapping"),
])
def test_a_file_that_is_not_a_compiled_pipeline_is_named(
    kfp_server: FakeKfp, tmp_path: Path, content: str, reason: str
) -> None:
    package = tmp_path / "bad.yaml"
    package.write_text(content)
    with pytest.raises(ValueError, match=rf"{package}: .*{reason}"):
        submit(str(package), kfp_server.url, parameters=REQUIRED)
    assert kfp_server.requests == []


def test_unknown_parameters_are_named_before_the_server_is_contacted(kfp_server: FakeKfp) -> None:
    with pytest.raises(ValueError, match=r"unknown parameter bta \(did you mean beta\?\); "
                                          r"unknown parameter epoch \(did you mean epochs\?\)") as raised:
        submit("intent", kfp_server.url, parameters={**REQUIRED, "bta": 0.3, "epoch": 2})
    assert re.search(r"It accepts: .*\bbeta\b.*\bepochs\b", str(raised.value))
    assert kfp_server.requests == []


def test_missing_and_mistyped_parameters_are_named(kfp_server: FakeKfp) -> None:
    parameters = {"production_log_uri": "gs://b/log", "epochs": "3", "beta": True}
    with pytest.raises(ValueError) as raised:
        submit("intent", kfp_server.url, parameters=parameters)
    message = str(raised.value)
    assert "missing required parameters eval_uri, teacher_model" in message
    assert "epochs='3' is not a NUMBER_INTEGER" in message
    assert "beta=True is not a NUMBER_DOUBLE" in message
    assert kfp_server.requests == []


def test_resource_parameters_must_be_kubernetes_quantities(kfp_server: FakeKfp) -> None:
    good = {"training_cpu_request": "500m", "training_cpu_limit": "8", "training_memory_request": "512Mi",
            "gate_memory_limit": "1.5G"}
    check_parameters(load_package("intent_distillation"), {**REQUIRED, **good})
    bad = {"training_cpu_request": "4 cores", "gate_memory_limit": "16GB"}
    with pytest.raises(ValueError) as raised:
        submit("intent", kfp_server.url, parameters={**REQUIRED, **bad})
    message = str(raised.value)
    assert "training_cpu_request='4 cores' is not a Kubernetes quantity (e.g. 2 or 500m)" in message
    assert "gate_memory_limit='16GB' is not a Kubernetes quantity (e.g. 16Gi or 512Mi)" in message
    assert kfp_server.requests == []


def test_the_package_knows_the_intent_pipeline_inputs() -> None:
    package = load_package("intent_distillation")
    assert package.path == INTENT_PACKAGE
    assert package.required == sorted(REQUIRED)
    assert package.parameters["beta"]["parameterType"] == "NUMBER_DOUBLE"
    assert submit_module.resolve_package("intent") == INTENT_PACKAGE


def test_submit_reports_the_ui_link_and_each_change_of_state(kfp_server: FakeKfp) -> None:
    kfp_server.run_states = ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]
    messages: list[str] = []
    run_id = submit("intent", kfp_server.url, parameters=REQUIRED, run_name="watched", wait=True, poll_s=0.01,
                    progress=messages.append)
    assert messages[0] == f"run {run_id} (watched): {kfp_server.url}/#/runs/details/{run_id}"
    states = [message.split(": ")[1].split(" after")[0] for message in messages[1:]]
    assert states == ["PENDING", "RUNNING", "SUCCEEDED"], "one line per change of state, none per poll"


@pytest.mark.parametrize("enable_caching", [False, True])
def test_no_cache_turns_caching_off_for_every_task(kfp_server: FakeKfp, enable_caching: bool) -> None:
    submit("intent", kfp_server.url, parameters=REQUIRED, enable_caching=enable_caching)
    (create,) = kfp_server.calls("POST", f"{API}/runs")
    spec = create.body["pipeline_spec"].get("pipeline_spec", create.body["pipeline_spec"])
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    tasks = [task for dag in dags for task in dag["tasks"].values()]
    assert any("intent-gate-check" in dag["tasks"] for dag in dags[1:]), "the stages sit in the exit handler"
    assert tasks and all(task["cachingOptions"].get("enableCache", False) is enable_caching for task in tasks)


def test_submit_with_an_image_registry_sends_images_pinned_by_digest(kfp_server: FakeKfp, tmp_path: Path) -> None:
    from test_image_pins import REGISTRY, write_pins

    pins = write_pins(tmp_path / "pins.json")
    submit("intent", kfp_server.url, parameters=REQUIRED, image_registry=REGISTRY, image_pins=pins)
    (create,) = kfp_server.calls("POST", f"{API}/runs")
    spec = create.body["pipeline_spec"].get("pipeline_spec", create.body["pipeline_spec"])
    images = {executor["container"]["image"] for executor in spec["deploymentSpec"]["executors"].values()
              if "container" in executor}  # importers have no image
    assert images and all(image.startswith(f"{REGISTRY}/mangadistill-") and "@sha256:" in image for image in images)
    assert "ghcr.io/mangaassist" in INTENT_PACKAGE.read_text(), "the checked-in package is unchanged"
