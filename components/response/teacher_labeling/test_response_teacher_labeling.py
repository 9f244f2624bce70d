"""response_teacher_labeling alone with kfp.local: a fake managed teacher API answers every prompt, only
redacted text reaches it with the key from the environment, bad rows are quarantined, and the cache makes a
rerun free."""

from collections.abc import Iterator
from typing import NamedTuple

import pyarrow as pa
import pytest
from fakes import USAGE, FakeChatServer
from kfp import dsl, local
from kfp.dsl import Dataset, Metrics

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.response.contracts import TEACHER_RESPONSES
from mangadistill_components.response.teacher_labeling import response_teacher_labeling

API_KEY = "key-from-the-secret"
PROMPTS = [
    {"prompt_id": "p1", "prompt": "is one piece in stock? mail me at jane.doe@example.com"},
    {"prompt_id": "p2", "prompt": "how many volumes does berserk have?"},
    {"prompt_id": "p2", "prompt": "a repeated prompt_id"},
    {"prompt_id": "p3", "prompt": "recommend a romance manga like nana"},
    {"prompt_id": "p4", "prompt": "is vagabond finished?"},
    {"prompt_id": "p5", "prompt": "how much is a volume of monster"},
]
ANSWERED = ["p1", "p2", "p3", "p4", "p5"]


class LabelingOutputs(NamedTuple):
    teacher_responses: Dataset
    quarantine: Dataset
    metrics: Metrics


@dsl.pipeline(name="response-teacher-labeling-alone")
def labeling_alone(prompts_uri: str, base_url: str, cache_uri: str) -> LabelingOutputs:
    prompts = dsl.importer(artifact_uri=prompts_uri, artifact_class=dsl.Dataset).output
    task = response_teacher_labeling(prompts=prompts, teacher_model="gpt-4o-mini", teacher_base_url=base_url,
                                     cache_uri=cache_uri, concurrency=2)
    return LabelingOutputs(task.outputs["teacher_responses"], task.outputs["quarantine"], task.outputs["metrics"])


@pytest.fixture
def teacher_api(monkeypatch) -> Iterator[FakeChatServer]:
    for name in ("NO_PROXY", "no_proxy"):  # the task's subprocess reaches the fake API on 127.0.0.1
        monkeypatch.setenv(name, "127.0.0.1")
    monkeypatch.setenv("TEACHER_API_KEY", API_KEY)
    server = FakeChatServer()
    yield server
    server.close()


def test_the_teacher_answers_redacted_prompts_and_a_rerun_is_served_from_the_cache(tmp_path, teacher_api):
    prompts_uri = str(tmp_path / "prompts.parquet")
    storage.write_table(pa.Table.from_pylist(PROMPTS), prompts_uri)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               enable_caching=False)
    arguments = {"prompts_uri": prompts_uri, "base_url": teacher_api.base_url, "cache_uri": str(tmp_path / "cache")}
    run = labeling_alone(**arguments)

    answers = validate_table(storage.read_table(run.outputs["teacher_responses"].path), TEACHER_RESPONSES,
                             "answers", on_bad_rows="fail").table
    assert answers.column("prompt_id").to_pylist() == ANSWERED
    assert all(len(skus) > 0 for skus in answers.column("retrieved_skus").to_pylist())
    assert len(teacher_api.requests) == len(ANSWERED)
    assert all(request["auth"] == f"Bearer {API_KEY}" for request in teacher_api.requests)
    assert not any("jane.doe@example.com" in r["text"] for r in teacher_api.requests)
    quarantine = storage.read_table(run.outputs["quarantine"].path).to_pylist()
    assert [row["reason"] for row in quarantine] == ["duplicate prompt_id"]
    metrics = run.outputs["metrics"].metadata
    assert metrics["teacher_calls"] == len(ANSWERED)
    assert metrics["completion_tokens"] == len(ANSWERED) * USAGE["completion_tokens"]
    assert metrics["redacted_email"] == 1 and metrics["quarantined_rows"] == 1

    again = labeling_alone(**arguments)
    assert again.outputs["metrics"].metadata["cache_hits"] == len(ANSWERED)
    assert len(teacher_api.requests) == len(ANSWERED)
