"""response_shard_prompts alone with kfp.local: the prompts, validated and redacted once, split into shards
that together hold every good row once; the task returns the shard indices a dsl.ParallelFor fans out over."""

import json
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
from kfp import dsl, local
from kfp.dsl import Dataset, Metrics

from mangadistill.core import storage
from mangadistill.response.stages import SHARD_MANIFEST, SHARD_QUARANTINE, shard_uri
from mangadistill_components.response.shard_prompts import response_shard_prompts

PROMPTS = [{"prompt_id": f"p{i}", "prompt": f"question {i} about berserk"} for i in range(9)] + [
    {"prompt_id": "p9", "prompt": "call me on (415) 555-0100"}, {"prompt_id": "p3", "prompt": "repeated id"}]


class SplitOutputs(NamedTuple):
    indices: list
    shards: Dataset
    metrics: Metrics


@dsl.pipeline(name="response-shard-prompts-alone")
def split_alone(prompts_uri: str, shards: int) -> SplitOutputs:
    prompts = dsl.importer(artifact_uri=prompts_uri, artifact_class=dsl.Dataset).output
    task = response_shard_prompts(prompts=prompts, shard_count=shards)
    return SplitOutputs(task.outputs["Output"], task.outputs["shards"], task.outputs["metrics"])


def test_the_good_prompts_are_split_redacted_into_shards_and_the_indices_returned(tmp_path):
    prompts_uri = str(tmp_path / "prompts.parquet")
    storage.write_table(pa.Table.from_pylist(PROMPTS), prompts_uri)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               enable_caching=False)
    run = split_alone(prompts_uri=prompts_uri, shards=3)

    assert run.outputs["indices"] == [0, 1, 2]
    folder = run.outputs["shards"].path
    manifest = json.loads(Path(folder, SHARD_MANIFEST).read_text())
    shards = [storage.read_table(shard_uri(folder, i)).to_pylist() for i in range(3)]
    assert [[row["prompt_id"] for row in shard] for shard in shards] == manifest["prompt_ids"]
    assert sorted(row["prompt_id"] for shard in shards for row in shard) == [f"p{i}" for i in range(10)]
    assert not any("555-0100" in row["prompt"] for shard in shards for row in shard)
    quarantine = storage.read_table(str(Path(folder, SHARD_QUARANTINE))).to_pylist()
    assert [(q["row"], q["reason"]) for q in quarantine] == [(10, "duplicate prompt_id")]
    metrics = run.outputs["metrics"].metadata
    assert metrics["prompts"] == 11 and metrics["shards"] == 3 and metrics["redacted_phone"] == 1

