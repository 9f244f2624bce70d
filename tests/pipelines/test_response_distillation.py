"""The compiled response pipeline: GPU settings for the training and quantization tasks come from pipeline
parameters, the teacher key only from the Kubernetes secret, and the dataset stage feeds every teacher call."""

from pathlib import Path

import pytest
import yaml

from mangadistill_pipelines.cluster import TEACHER_SECRET, TEACHER_SECRET_KEY
from mangadistill_pipelines.response_distillation import LABELING_PARALLELISM

ROOT = Path(__file__).resolve().parents[2]
GPU_PARAMETERS = {"accelerator_type", "accelerator_count", "gpu_node_selector", "gpu_tolerations"}


@pytest.fixture(scope="module")
def compiled() -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all((ROOT / "pipelines" / "response_distillation.yaml").read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


SHARD = "shard/response-teacher-labeling"
"""The production labelling task: inside the `label_shard` pipeline the dsl.ParallelFor runs."""
SHARD_COMPONENT = "comp-response-labeling-shard"


def _tasks(spec: dict) -> dict:
    """Every task of the root DAG and its sub-DAGs (the exit handler's, dsl.If's, dsl.ParallelFor's), but not
    those of the per-shard pipeline (see SHARD)."""
    dags = [spec["root"]["dag"], *(component["dag"] for name, component in spec["components"].items()
                                   if "dag" in component and name != SHARD_COMPONENT)]
    return {name: task for dag in dags for name, task in dag["tasks"].items()}


def _task(spec: dict, task: str) -> dict:
    """A task by name, or with SHARD the labelling task of the per-shard pipeline."""
    if task == SHARD:
        return spec["components"][SHARD_COMPONENT]["dag"]["tasks"]["response-teacher-labeling"]
    return _tasks(spec)[task]


def _executor(spec: dict, task: str) -> str:
    return _task(spec, task)["componentRef"]["name"].replace("comp-", "exec-")


@pytest.mark.parametrize("task", ["response-distillation-training", "response-quantization",
                                  SHARD, "response-teacher-labeling"])
def test_gpu_tasks_take_their_accelerator_from_pipeline_parameters(compiled, task):
    spec, platform = compiled
    name = _executor(spec, task)
    resources = spec["deploymentSpec"]["executors"][name]["container"]["resources"]
    accelerator = resources["accelerator"]
    assert "accelerator_type" in accelerator["resourceType"] and "accelerator_count" in accelerator["resourceCount"]
    selector = platform[name]["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"]
    toleration = platform[name]["tolerations"][0]["tolerationJson"]["componentInputParameter"]
    # inside the exit handler's sub-DAG KFP names the pipeline parameter `pipelinechannel--<name>`
    assert selector.removeprefix("pipelinechannel--") == "gpu_node_selector"
    assert toleration.removeprefix("pipelinechannel--") == "gpu_tolerations"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) >= GPU_PARAMETERS
    if task == SHARD:  # the shard pipeline's inputs: the loop passes it the labelling stage's parameters
        loop = next(task for task in _tasks(spec).values() if "parameterIterator" in task)["inputs"]["parameters"]
        assert {f"pipelinechannel--{name}" for name in (*GPU_PARAMETERS, "labeling_cpu_request",
                "labeling_cpu_limit", "labeling_memory_request", "labeling_memory_limit")} <= set(loop)
        assert "memory_request" in resources["resourceMemoryRequest"]


@pytest.mark.parametrize("task", ["response-dataset", "response-curation", "response-gate-check"])
def test_data_and_gate_tasks_run_on_cpu(compiled, task):
    spec, platform = compiled
    name = _executor(spec, task)
    assert "accelerator" not in spec["deploymentSpec"]["executors"][name]["container"].get("resources", {})
    assert name not in platform or "nodeSelector" not in platform[name]


def test_teacher_calls_get_the_key_from_the_secret_and_only_redacted_prompts(compiled):
    spec, platform = compiled
    for task in (SHARD, "response-teacher-labeling", "response-gate-check"):  # the judge too
        (secret,) = platform[_executor(spec, task)]["secretAsEnv"]
        assert secret["secretName"] == TEACHER_SECRET
        assert secret["keyToEnv"] == [{"envVar": TEACHER_SECRET_KEY, "secretKey": TEACHER_SECRET_KEY}]
    split = _task(spec, "response-shard-prompts")["inputs"]["artifacts"]["prompts"]["taskOutputArtifact"]
    assert split == {"outputArtifactKey": "prompts", "producerTask": "response-dataset"}  # redacted prompts only
    assert _task(spec, SHARD)["inputs"]["artifacts"]["prompts"] == {"componentInputArtifact": "shards"}
    evaluation = _task(spec, "response-teacher-labeling")["inputs"]["artifacts"]["prompts"]["taskOutputArtifact"]
    assert evaluation["producerTask"].startswith("importer")  # the fixed eval set, as reviewed


def test_production_labelling_fans_out_over_shards_and_is_merged_before_curation(compiled):
    spec, _ = compiled
    tasks = _tasks(spec)
    assert spec["root"]["inputDefinitions"]["parameters"]["labeling_shards"]["defaultValue"] == 1
    shard_count = tasks["response-shard-prompts"]["inputs"]["parameters"]["shard_count"]
    assert shard_count["componentInputParameter"].removeprefix("pipelinechannel--") == "labeling_shards"
    (loop_name,) = (name for name, task in tasks.items() if "parameterIterator" in task)
    loop = tasks[loop_name]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--response-shard-prompts-Output"
    assert loop["iteratorPolicy"]["parallelismLimit"] == LABELING_PARALLELISM
    merged = tasks["response-merge-labels"]["inputs"]["artifacts"]
    assert {merged[name]["taskOutputArtifact"]["producerTask"]
            for name in ("shard_responses", "shard_quarantines", "shard_metrics")} == {loop_name}
    curated = tasks["response-curation"]["inputs"]["artifacts"]["teacher_responses"]["taskOutputArtifact"]
    assert curated == {"outputArtifactKey": "teacher_responses", "producerTask": "response-merge-labels"}
