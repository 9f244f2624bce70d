"""The compiled pipelines carry the cluster settings, and no secret value reaches any compiled file."""

import re
from dataclasses import astuple
from pathlib import Path

import pytest
import yaml
from kfp import compiler

from mangadistill_pipelines.cluster import PUBLISH, STAGE_RESOURCES, TEACHER_SECRET, TEACHER_SECRET_KEY
from mangadistill_pipelines.compile import PIPELINES

ROOT = Path(__file__).resolve().parents[2]
GPU_STAGES = ("teacher-labeling", "distillation-training")


def _load(name: str) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all((ROOT / "pipelines" / f"{name}.yaml").read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def intent():
    return _load("intent_distillation")


def _all_tasks(spec: dict) -> dict:
    """Every task of the pipeline: the root DAG's and those of its sub-DAGs (the exit handler's, dsl.If's)."""
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    return {name: task for dag in dags for name, task in dag["tasks"].items()}


def _parameter(reference: dict) -> str:
    """The pipeline parameter a task input reads: inside a sub-DAG KFP names it `pipelinechannel--<name>`."""
    return reference["componentInputParameter"].removeprefix("pipelinechannel--")


def _stage(name: str) -> str:
    """The stage of an executor or task name: "exec-intent-teacher-labeling-2" -> "teacher-labeling"."""
    return re.sub(r"^(exec-)?(intent|reranker|response)-", "", name).rstrip("-0123456789")


def _executors(spec: dict, stage: str) -> dict:
    found = {k: v for k, v in spec["deploymentSpec"]["executors"].items() if _stage(k) == stage}
    assert found, f"no executor for {stage}"
    return found


@pytest.mark.parametrize("stage", GPU_STAGES)
def test_gpu_stages_request_accelerators_from_pipeline_parameters(intent, stage):
    spec, platform = intent
    for name, executor in _executors(spec, stage).items():
        accelerator = executor["container"]["resources"]["accelerator"]
        assert "accelerator_type" in accelerator["resourceType"] and "accelerator_count" in accelerator["resourceCount"]
        k8s = platform[name]
        assert _parameter(k8s["nodeSelector"]["nodeSelectorJson"]) == "gpu_node_selector"
        assert _parameter(k8s["tolerations"][0]["tolerationJson"]) == "gpu_tolerations"
        assert {"mountPath": "/dev/shm", "medium": "Memory", "volumeName": "dshm", "sizeLimit": "2Gi"} in \
            k8s["emptyDirMounts"]
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert {"accelerator_type", "accelerator_count", "gpu_node_selector", "gpu_tolerations"} <= set(inputs)


@pytest.mark.parametrize("stage", ["quantization", "gate-check", "soft-label-ensemble"])
def test_cpu_stages_request_no_accelerator(intent, stage):
    spec, platform = intent
    for name, executor in _executors(spec, stage).items():
        assert "accelerator" not in executor["container"].get("resources", {})
        assert name not in platform or "nodeSelector" not in platform[name]


EXECUTOR_STAGES = {"teacher-labeling": "labeling", "soft-label-ensemble": "data", "distillation-training": "training",
                   "quantization": "quantization", "gate-check": "gate"}
"""The resource parameters' stage (cluster.STAGE_RESOURCES) of each executor stage in the intent pipeline."""


@pytest.mark.parametrize("stage", list(EXECUTOR_STAGES))
def test_every_stage_takes_cpu_and_memory_from_pipeline_parameters(intent, stage):
    spec, _ = intent
    prefix = EXECUTOR_STAGES[stage]
    for executor in _executors(spec, stage).values():
        resources = executor["container"]["resources"]
        for field, parameter in (("resourceCpuRequest", "cpu_request"), ("resourceCpuLimit", "cpu_limit"),
                                 ("resourceMemoryRequest", "memory_request"), ("resourceMemoryLimit", "memory_limit")):
            assert resources[field] == f"{{{{$.inputs.parameters['pipelinechannel--{prefix}_{parameter}']}}}}"


def test_the_publish_task_has_fixed_requests_and_limits(intent):
    spec, _ = intent
    for executor in _executors(spec, "publish-model").values():
        resources = executor["container"]["resources"]
        assert (resources["resourceCpuRequest"], resources["resourceCpuLimit"], resources["resourceMemoryRequest"],
                resources["resourceMemoryLimit"]) == astuple(PUBLISH)


@pytest.mark.parametrize("name", list(PIPELINES))
def test_resource_parameters_default_to_the_stage_sizes(name):
    spec, _ = _load(name)
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    sized = {key.rsplit("_", 2)[0] for key in inputs if key.endswith(("_request", "_limit"))
             and key.split("_")[-2] in ("cpu", "memory")}
    assert sized and sized <= set(STAGE_RESOURCES)
    for stage in sized:
        defaults = STAGE_RESOURCES[stage]
        for field in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
            assert inputs[f"{stage}_{field}"]["defaultValue"] == getattr(defaults, field), f"{stage}_{field}"


def test_retries_with_backoff_on_teacher_and_training_tasks_only(intent):
    spec, _ = intent
    tasks = _all_tasks(spec)
    retried = {name for name, task in tasks.items() if "retryPolicy" in task}
    assert retried == {n for n in tasks if _stage(n) in ("teacher-labeling", "distillation-training")}
    policy = tasks["intent-teacher-labeling"]["retryPolicy"]
    assert policy["maxRetryCount"] == 3 and policy["backoffDuration"] == "30s" and policy["backoffFactor"] == 2


def test_caching_is_on_by_default(intent):
    spec, _ = intent
    tasks = _all_tasks(spec)
    assert all(task.get("cachingOptions", {}).get("enableCache", True) is not False for task in tasks.values())


def test_teacher_key_comes_only_from_the_kubernetes_secret(intent):
    spec, platform = intent
    for name in _executors(spec, "teacher-labeling"):
        (secret,) = platform[name]["secretAsEnv"]
        assert secret["secretName"] == TEACHER_SECRET
        assert secret["keyToEnv"] == [{"envVar": TEACHER_SECRET_KEY, "secretKey": TEACHER_SECRET_KEY}]
    for executor in spec["deploymentSpec"]["executors"].values():
        env = executor.get("container", {}).get("env", [])  # importers have no container
        assert all(e["name"] != TEACHER_SECRET_KEY for e in env)


@pytest.mark.parametrize("name", list(PIPELINES))
def test_no_secret_value_in_any_compiled_file(name, tmp_path, monkeypatch):
    sentinel = "sk-test-4f1c9a0e-never-in-yaml"
    monkeypatch.setenv(TEACHER_SECRET_KEY, sentinel)
    out = tmp_path / f"{name}.yaml"
    compiler.Compiler().compile(PIPELINES[name], str(out))
    compiled = [out, *ROOT.glob("pipelines/*.yaml"), *ROOT.glob("components/*/*/component.yaml")]
    for path in compiled:
        text = path.read_text()
        assert sentinel not in text, path
        assert "sk-" not in text.replace("sk-test", ""), f"{path} holds something shaped like an API key"


@pytest.fixture(scope="module")
def reranker():
    return _load("reranker_distillation")


@pytest.mark.parametrize("stage", GPU_STAGES)
def test_reranker_gpu_stages_request_accelerators_from_pipeline_parameters(reranker, stage):
    test_gpu_stages_request_accelerators_from_pipeline_parameters(reranker, stage)


@pytest.mark.parametrize("stage", ["quantization", "gate-check"])
def test_reranker_cpu_stages_request_no_accelerator(reranker, stage):
    test_cpu_stages_request_no_accelerator(reranker, stage)


def test_reranker_stages_have_resources_and_retry_only_teacher_and_training(reranker):
    spec, platform = reranker
    for stage in ("teacher-labeling", "distillation-training", "quantization", "gate-check"):
        test_every_stage_takes_cpu_and_memory_from_pipeline_parameters(reranker, stage)
    tasks = _all_tasks(spec)
    assert {name for name, task in tasks.items() if "retryPolicy" in task} == {"reranker-teacher-labeling",
                                                                              "reranker-distillation-training"}
    # a cross-encoder teacher needs no API key: no secret is mounted anywhere in this pipeline
    assert all("secretAsEnv" not in executor for executor in platform.values())
