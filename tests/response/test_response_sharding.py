"""Sharded teacher labelling in the library: split -> label each shard -> merge gives the rows one unsharded
labelling gives, the shards share the answer cache, a failed answer is a quarantine row (never a failed shard),
and a merge that would lose or double a prompt stops, naming it."""

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from fakes import FakeChatServer

from mangadistill.core import storage
from mangadistill.core.sharding import ShardAccountingError
from mangadistill.response.labeling import ResponseLabelingConfig
from mangadistill.response.stages import (
    run_response_merge_labels,
    run_response_shard_prompts,
    run_response_teacher_labeling,
    shard_uri,
)

PROMPTS = [
    {"prompt_id": f"p{i:02d}", "prompt": text} for i, text in enumerate([
        "is one piece in stock?", "how many volumes does berserk have?", "recommend a romance manga like nana",
        "is vagabond finished?", "how much is a volume of monster", "mail me at jane.doe@example.com about naruto",
        "a prompt the teacher always fails on [503-always]", "what is like chainsaw man but funnier?",
        "do you ship to canada?", "price of naruto volume 1?", "best horror manga?", "is akira in colour?",
    ])
] + [{"prompt_id": "p01", "prompt": "a repeated prompt_id"}, {"prompt_id": "p99", "prompt": "   "}]
ANSWERED = [f"p{i:02d}" for i in range(12) if i != 6]


@pytest.fixture
def teacher_api(monkeypatch) -> Iterator[FakeChatServer]:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1")
    monkeypatch.setenv("TEACHER_API_KEY", "key")
    server = FakeChatServer()
    yield server
    server.close()


def _sharded(prompts_uri: str, folder: Path, config: ResponseLabelingConfig, shards: int) -> dict[str, float]:
    """What the pipeline does: split, one labelling call per shard, merge."""
    split = str(folder / "split")
    indices, _ = run_response_shard_prompts(prompts_uri, split, shards)
    assert indices == list(range(shards))
    outputs = [(str(folder / f"r{i}.parquet"), str(folder / f"q{i}.parquet")) for i in indices]
    metrics = [run_response_teacher_labeling(split, r, q, config, shard=i)
               for i, (r, q) in zip(indices, outputs, strict=True)]
    return run_response_merge_labels(split, [r for r, _ in reversed(outputs)], [q for _, q in reversed(outputs)],
                                     metrics, str(folder / "responses.parquet"), str(folder / "quarantine.parquet"))


def _rows(uri: str) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "cached"} for row in storage.read_table(uri).to_pylist()]


def test_three_shards_give_the_rows_of_one_and_share_the_cache(tmp_path, teacher_api):
    prompts_uri = str(tmp_path / "prompts.parquet")
    storage.write_table(pa.Table.from_pylist(PROMPTS), prompts_uri)
    config = ResponseLabelingConfig("gpt-4o-mini", base_url=teacher_api.base_url, cache_uri=str(tmp_path / "cache"),
                                    concurrency=2, max_retries=0)

    metrics = _sharded(prompts_uri, tmp_path / "sharded", config, shards=3)
    answered_calls = [r for r in teacher_api.requests if "[503-always]" not in r["text"]]
    assert len(answered_calls) == len(ANSWERED)  # each prompt asked once, by one shard
    assert metrics["teacher_calls"] == len(ANSWERED) and metrics["failures"] == 1 and metrics["shards"] == 3
    assert metrics["prompts"] == len(ANSWERED) + 1 and metrics["redacted_email"] == 1
    merged = _rows(str(tmp_path / "sharded" / "responses.parquet"))
    assert [row["prompt_id"] for row in merged] == ANSWERED  # the input's order, whatever order the shards came in
    quarantine = storage.read_table(str(tmp_path / "sharded" / "quarantine.parquet")).to_pylist()
    assert [(q["row"], q["message_id"], q["reason"].split(":")[0]) for q in quarantine] == [  # split's first
        (12, "p01", "duplicate prompt_id"), (13, "p99", "empty text"), (6, "p06", "teacher failed after 1 attempt(s)")]
    assert {q["source"] for q in quarantine} == {prompts_uri}  # rows of the input file, not of a shard
    assert metrics["quarantined_rows"] == 3

    single = run_response_teacher_labeling(prompts_uri, str(tmp_path / "one.parquet"), str(tmp_path / "q.parquet"),
                                           config)
    assert single["teacher_calls"] == 0 and single["cache_hits"] == len(ANSWERED)  # the shards' answers, reused
    assert _rows(str(tmp_path / "one.parquet")) == merged
    one_quarantine = storage.read_table(str(tmp_path / "q.parquet")).to_pylist()
    assert sorted((q["message_id"], q["reason"]) for q in one_quarantine) == sorted(
        (q["message_id"], q["reason"]) for q in quarantine)

    before = len(teacher_api.requests)
    again = _sharded(prompts_uri, tmp_path / "rerun", config, shards=3)
    assert again["teacher_calls"] == 0 and again["cache_hits"] == len(ANSWERED)
    assert all("[503-always]" in r["text"] for r in teacher_api.requests[before:])  # only the failure is retried


def test_an_empty_shard_labels_nothing_and_merges(tmp_path, teacher_api):
    prompts_uri = str(tmp_path / "prompts.parquet")
    storage.write_table(pa.Table.from_pylist(PROMPTS[:2]), prompts_uri)
    config = ResponseLabelingConfig("gpt-4o-mini", base_url=teacher_api.base_url, cache_uri=str(tmp_path / "cache"))
    metrics = _sharded(prompts_uri, tmp_path, config, shards=4)
    assert metrics["labelled"] == 2 and [r["prompt_id"] for r in _rows(str(tmp_path / "responses.parquet"))] == [
        "p00", "p01"]


def test_a_merge_that_loses_or_doubles_a_prompt_stops_and_names_it(tmp_path, teacher_api):
    prompts_uri = str(tmp_path / "prompts.parquet")
    storage.write_table(pa.Table.from_pylist(PROMPTS[:6]), prompts_uri)
    config = ResponseLabelingConfig("gpt-4o-mini", base_url=teacher_api.base_url, cache_uri=str(tmp_path / "cache"))
    split = str(tmp_path / "split")
    indices, _ = run_response_shard_prompts(prompts_uri, split, 2)
    outputs = [(str(tmp_path / f"r{i}.parquet"), str(tmp_path / f"q{i}.parquet")) for i in indices]
    for i, (r, q) in zip(indices, outputs, strict=True):
        run_response_teacher_labeling(split, r, q, config, shard=i)
    manifest = json.loads(Path(split, "manifest.json").read_text())
    first = storage.read_table(outputs[0][0])
    lost_id = first["prompt_id"][0].as_py()
    assert lost_id in manifest["prompt_ids"][0]

    storage.write_table(first.slice(1), outputs[0][0])  # a shard that dropped its first answer
    with pytest.raises(ShardAccountingError, match=f"1 prompt\\(s\\) lost .*'{lost_id}'"):
        run_response_merge_labels(split, [r for r, _ in outputs], [q for _, q in outputs], [{}, {}],
                                  str(tmp_path / "m.parquet"), str(tmp_path / "mq.parquet"))
    assert not Path(tmp_path / "m.parquet").exists()  # nothing written

    second = storage.read_table(outputs[1][0])
    storage.write_table(pa.concat_tables([first, second.slice(0, 1)]), outputs[0][0])  # one answer in both shards
    doubled_id = second["prompt_id"][0].as_py()
    with pytest.raises(ShardAccountingError, match=f"1 prompt\\(s\\) doubled .*'{doubled_id}'"):
        run_response_merge_labels(split, [r for r, _ in outputs], [q for _, q in outputs], [{}, {}],
                                  str(tmp_path / "m.parquet"), str(tmp_path / "mq.parquet"))
    with pytest.raises(ValueError, match="2 shard\\(s\\) were split off, but 1 answer"):
        run_response_merge_labels(split, [outputs[0][0]], [outputs[0][1]], [{}], str(tmp_path / "m.parquet"),
                                  str(tmp_path / "mq.parquet"))
    with pytest.raises(ValueError, match="labeling_shards must be >= 1"):
        run_response_shard_prompts(prompts_uri, str(tmp_path / "none"), 0)
    assert shard_uri(split, 1).endswith("/shard-00001.parquet")
