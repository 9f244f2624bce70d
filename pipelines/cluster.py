"""Cluster settings applied to pipeline tasks: GPU scheduling, resources, retries, the teacher secret.

Everything here lands in the compiled YAML (the task spec or the kfp-kubernetes platform config); the local
runners ignore it. GPU type, count, node selector and tolerations are pipeline parameters, so one compiled
pipeline runs on a GKE GPU node pool, an nvkind cluster, or (count 0, no selector) a CPU-only kind cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import PipelineTask

TEACHER_SECRET = "mangadistill-teacher-api"
"""Kubernetes Secret holding the teacher API key (manifests/secrets/teacher-api); never in pipeline YAML."""
TEACHER_SECRET_KEY = "TEACHER_API_KEY"
SHM_SIZE = "2Gi"
# Defaults schedule onto any node that offers `nvidia.com/gpu` (GKE adds the GPU taint's toleration itself).
# To pin a GPU type on GKE: gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"}; on other
# clusters with tainted GPU nodes: gpu_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists",
# "effect": "NoSchedule"}]. A CPU-only cluster (kind): accelerator_count=0.
DEFAULT_GPU_NODE_SELECTOR: dict = {}
DEFAULT_GPU_TOLERATIONS: list = []


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


LABELING = Resources("2", "8", "8Gi", "16Gi")
DATA = Resources("1", "2", "2Gi", "4Gi")
TRAINING = Resources("4", "8", "16Gi", "32Gi")
QUANTIZATION = Resources("2", "4", "4Gi", "8Gi")
GATE = Resources("2", "4", "8Gi", "16Gi")
STAGE_RESOURCES = {"labeling": LABELING, "data": DATA, "training": TRAINING, "quantization": QUANTIZATION,
                   "gate": GATE}
"""Default CPU and memory requests and limits per stage (teacher labeling; data preparation and soft labels;
distillation training; quantization; gate check and publishing). Every pipeline takes them as parameters
`<stage>_cpu_request`, `<stage>_cpu_limit`, `<stage>_memory_request`, `<stage>_memory_limit`, so a small
cluster (kind) or a large one is sized at submit time without editing the compiled YAML."""


PUBLISH = Resources("1", "2", "2Gi", "4Gi")
"""Publishing a promoted student (a copy to the models root). Fixed rather than parameters: kfp.local does not
hand a pipeline parameter that only sizes a task into the `dsl.If` branch the publish task runs in."""


def with_fixed_resources(task: PipelineTask, spec: Resources) -> PipelineTask:
    """`with_resources` with the requests and limits of `spec`."""
    return with_resources(task, spec.cpu_request, spec.cpu_limit, spec.memory_request, spec.memory_limit)


def under_pipeline_root(*parts: str) -> str:
    """`<pipeline root>/<parts...>` as a task argument: KFP puts in the run's pipeline root (gs:// on GKE, the
    local root under kfp.local), so checkpoints and the teacher cache outlive a killed pod and a retried task
    resumes. The library treats a placeholder left unresolved as "no such folder" and says so."""
    return "/".join((dsl.PIPELINE_ROOT_PLACEHOLDER, *parts))


RESOURCE_FIELDS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")


def sized_by(parameters: Mapping[str, Any]) -> Callable[[PipelineTask, str], PipelineTask]:
    """`resources(task, stage)`: set the task's requests and limits from the pipeline's resource parameters
    `<stage>_<field>` (RESOURCE_FIELDS) found in `parameters`, the pipeline function's `locals()`."""

    def resources(task: PipelineTask, stage: str) -> PipelineTask:
        return with_resources(task, *(parameters[f"{stage}_{field}"] for field in RESOURCE_FIELDS))

    return resources


def with_resources(task: PipelineTask, cpu_request, cpu_limit, memory_request, memory_limit) -> PipelineTask:
    """CPU and memory requests and limits of the task (strings or pipeline parameters, Kubernetes quantities)."""
    return (task.set_cpu_request(cpu_request).set_cpu_limit(cpu_limit)
            .set_memory_request(memory_request).set_memory_limit(memory_limit))


def on_gpu(task: PipelineTask, accelerator_type, accelerator_count, node_selector, tolerations) -> PipelineTask:
    """Request GPUs, steer the pod onto the GPU node pool, and give PyTorch data loaders a /dev/shm."""
    task.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE)
    return task


def with_retries(task: PipelineTask, retries: int = 3) -> PipelineTask:
    """Retry with exponential backoff (30 s, 60 s, 120 s ...): teacher calls and training can hit transient faults."""
    return task.set_retry(num_retries=retries, backoff_duration="30s", backoff_factor=2.0,
                          backoff_max_duration="3600s")


def with_teacher_secret(task: PipelineTask) -> PipelineTask:
    """TEACHER_API_KEY from the Kubernetes Secret; optional, so runs with a local adjudicator need none."""
    return kubernetes.use_secret_as_env(task, secret_name=TEACHER_SECRET,
                                        secret_key_to_env={TEACHER_SECRET_KEY: TEACHER_SECRET_KEY}, optional=True)
