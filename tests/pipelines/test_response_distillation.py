"""The compiled response pipeline: GPU settings for the training and quantization tasks come from pipeline
parameters, the teacher key only from the Kubernetes secret, and the dataset stage feeds every teacher call."""

from pathlib import Path

import pytest
import yaml

from mangadistill_pipelines.cluster import TEACHER_SECRET, TEACHER_SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]
GPU_PARAMETERS = {"accelerator_type", "accelerator_count", "gpu_node_selector", "gpu_tolerations"}


@pytest.fixture(scope="module")
def compiled() -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all((ROOT / "pipelines" / "response_distillation.yaml").read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec: dict) -> dict:
    """Every task: the root DAG's and its sub-DAGs' (the exit handler's, dsl.If's)."""
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    return {name: task for dag in dags for name, task in dag["tasks"].items()}


def _executor(spec: dict, task: str) -> str:
    return _tasks(spec)[task]["componentRef"]["name"].replace("comp-", "exec-")


@pytest.mark.parametrize("task", ["response-distillation-training", "response-quantization",
                                  "response-teacher-labeling", "response-teacher-labeling-2"])
def test_gpu_tasks_take_their_accelerator_from_pipeline_parameters(compiled, task):
    spec, platform = compiled
    name = _executor(spec, task)
    accelerator = spec["deploymentSpec"]["executors"][name]["container"]["resources"]["accelerator"]
    assert "accelerator_type" in accelerator["resourceType"] and "accelerator_count" in accelerator["resourceCount"]
    selector = platform[name]["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"]
    toleration = platform[name]["tolerations"][0]["tolerationJson"]["componentInputParameter"]
    # inside the exit handler's sub-DAG KFP names the pipeline parameter `pipelinechannel--<name>`
    assert selector.removeprefix("pipelinechannel--") == "gpu_node_selector"
    assert toleration.removeprefix("pipelinechannel--") == "gpu_tolerations"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) >= GPU_PARAMETERS


@pytest.mark.parametrize("task", ["response-dataset", "response-curation", "response-gate-check"])
def test_data_and_gate_tasks_run_on_cpu(compiled, task):
    spec, platform = compiled
    name = _executor(spec, task)
    assert "accelerator" not in spec["deploymentSpec"]["executors"][name]["container"].get("resources", {})
    assert name not in platform or "nodeSelector" not in platform[name]


def test_teacher_calls_get_the_key_from_the_secret_and_only_redacted_prompts(compiled):
    spec, platform = compiled
    tasks = _tasks(spec)
    for task in ("response-teacher-labeling", "response-teacher-labeling-2", "response-gate-check"):  # the judge too
        (secret,) = platform[_executor(spec, task)]["secretAsEnv"]
        assert secret["secretName"] == TEACHER_SECRET
        assert secret["keyToEnv"] == [{"envVar": TEACHER_SECRET_KEY, "secretKey": TEACHER_SECRET_KEY}]
    production = tasks["response-teacher-labeling"]["inputs"]["artifacts"]["prompts"]["taskOutputArtifact"]
    assert production == {"outputArtifactKey": "prompts", "producerTask": "response-dataset"}
    evaluation = tasks["response-teacher-labeling-2"]["inputs"]["artifacts"]["prompts"]["taskOutputArtifact"]
    assert evaluation["producerTask"].startswith("importer")  # the fixed eval set, as reviewed
