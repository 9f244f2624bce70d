"""The sharded labelling fan-out under kfp.local: response_shard_prompts -> dsl.ParallelFor of
response_teacher_labeling -> response_merge_labels, against a fake teacher API. Three shards give the rows one
unsharded task gives, and a rerun asks the teacher nothing (the shards share the answer cache)."""

from collections.abc import Iterator
from typing import NamedTuple

import pyarrow as pa
import pytest
from fakes import FakeChatServer
from kfp import dsl, local
from kfp.dsl import Dataset, Metrics

from mangadistill.core import storage
from mangadistill_components.response.merge_labels import response_merge_labels
from mangadistill_components.response.shard_prompts import response_shard_prompts
from mangadistill_components.response.teacher_labeling import response_teacher_labeling
from mangadistill_pipelines.cluster import under_pipeline_root
from mangadistill_pipelines.response_distillation import label_shard

PROMPTS = [{"prompt_id": f"p{i}", "prompt": text} for i, text in enumerate([
    "is one piece in stock? mail me at jane.doe@example.com", "how many volumes does berserk have?",
    "recommend a romance manga like nana", "is vagabond finished?", "how much is a volume of monster",
    "do you ship to canada?", "best horror manga?"])] + [{"prompt_id": "p1", "prompt": "a repeated prompt_id"}]
ANSWERED = [f"p{i}" for i in range(7)]


class ShardedOutputs(NamedTuple):
    sharded: Dataset
    sharded_quarantine: Dataset
    sharded_metrics: Metrics
    single: Dataset


@dsl.pipeline(name="response-sharded-labeling")
def sharded_labeling(prompts_uri: str, base_url: str, shards: int) -> ShardedOutputs:
    prompts = dsl.importer(artifact_uri=prompts_uri, artifact_class=dsl.Dataset).output
    split = response_shard_prompts(prompts=prompts, shard_count=shards)
    with dsl.ParallelFor(split.outputs["Output"], parallelism=2) as shard:
        labelled = label_shard(  # the response pipeline's own shard step: resources, retries, secret, GPU
            shards=split.outputs["shards"], shard=shard, teacher_model="gpt-4o-mini", teacher_base_url=base_url,
            teacher_concurrency=2, teacher_max_new_tokens=0, teacher_prices_uri="", catalog_uri="",
            accelerator_type="nvidia.com/gpu", accelerator_count=0, gpu_node_selector={}, gpu_tolerations=[],
            cpu_request="1", cpu_limit="2", memory_request="1Gi", memory_limit="2Gi")
    merged = response_merge_labels(
        shards=split.outputs["shards"], shard_responses=dsl.Collected(labelled.outputs["teacher_responses"]),
        shard_quarantines=dsl.Collected(labelled.outputs["quarantine"]),
        shard_metrics=dsl.Collected(labelled.outputs["metrics"]))
    single = response_teacher_labeling(prompts=prompts, teacher_model="gpt-4o-mini", teacher_base_url=base_url,
                                       cache_uri=under_pipeline_root("teacher-cache", "response"),  # the shards'
                                       concurrency=2)  # what labeling_shards replaced
    single.after(merged)  # after the shards: its answers come from their cache
    return ShardedOutputs(merged.outputs["teacher_responses"], merged.outputs["quarantine"],
                          merged.outputs["metrics"], single.outputs["teacher_responses"])


@pytest.fixture
def teacher_api(monkeypatch) -> Iterator[FakeChatServer]:
    for name in ("NO_PROXY", "no_proxy"):  # the tasks' subprocesses reach the fake API on 127.0.0.1
        monkeypatch.setenv(name, "127.0.0.1")
    monkeypatch.setenv("TEACHER_API_KEY", "key-from-the-secret")
    server = FakeChatServer()
    yield server
    server.close()


def _rows(artifact) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "cached"} for row in storage.read_table(artifact.path).to_pylist()]


def test_three_shards_label_what_one_task_labels_and_a_rerun_asks_the_teacher_nothing(tmp_path, teacher_api):
    prompts_uri = str(tmp_path / "prompts.parquet")
    storage.write_table(pa.Table.from_pylist(PROMPTS), prompts_uri)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               enable_caching=False)
    arguments = {"prompts_uri": prompts_uri, "base_url": teacher_api.base_url, "shards": 3}
    run = sharded_labeling(**arguments)

    assert len(teacher_api.requests) == len(ANSWERED)  # each prompt asked once, by one shard; none by `single`
    assert not any("jane.doe@example.com" in r["text"] for r in teacher_api.requests)
    sharded = _rows(run.outputs["sharded"])
    assert [row["prompt_id"] for row in sharded] == ANSWERED
    assert sharded == _rows(run.outputs["single"])  # the same rows as one unsharded task
    quarantine = storage.read_table(run.outputs["sharded_quarantine"].path).to_pylist()
    assert [(q["row"], q["message_id"], q["reason"]) for q in quarantine] == [(7, "p1", "duplicate prompt_id")]
    metrics = run.outputs["sharded_metrics"].metadata
    assert metrics["shards"] == 3 and metrics["labelled"] == len(ANSWERED)
    assert metrics["teacher_calls"] == len(ANSWERED) and metrics["redacted_email"] == 1

    again = sharded_labeling(**arguments)
    assert len(teacher_api.requests) == len(ANSWERED)  # 0 teacher calls on the rerun
    assert again.outputs["sharded_metrics"].metadata["cache_hits"] == len(ANSWERED)
    assert _rows(again.outputs["sharded"]) == sharded
