"""response_curation alone with kfp.local: teacher answers with a wrong catalog fact go to review, a human
correction replaces the teacher's answer, and the rest is mixed with the human and refusal examples."""

import json
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
from kfp import dsl, local
from kfp.dsl import Dataset, Metrics

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.response.contracts import RESPONSE_EXAMPLES, RESPONSE_REVIEW, TEACHER_RESPONSES
from mangadistill.sample_data.catalog import catalog_records
from mangadistill.sample_data.responses import fact_answer, generate_human_corrected, generate_refusal_escalation
from mangadistill_components.response.curation import response_curation


class CurationOutputs(NamedTuple):
    train: Dataset
    validation: Dataset
    review: Dataset
    manifest: Dataset
    quarantine: Dataset
    metrics: Metrics


@dsl.pipeline(name="response-curation-alone")
def curation_alone(teacher_uri: str, human_uri: str, refusal_uri: str) -> CurationOutputs:
    task = response_curation(
        teacher_responses=dsl.importer(artifact_uri=teacher_uri, artifact_class=dsl.Dataset).output,
        human_corrected=dsl.importer(artifact_uri=human_uri, artifact_class=dsl.Dataset).output,
        refusal_escalation=dsl.importer(artifact_uri=refusal_uri, artifact_class=dsl.Dataset).output,
        scale=1.0, validation_fraction=0.0,
    )
    return CurationOutputs(*(task.outputs[name] for name in CurationOutputs._fields))


def _teacher_row(prompt_id: str, prompt: str, response: str) -> dict:
    return {"prompt_id": prompt_id, "prompt": prompt, "response": response, "model": "gpt-4o-mini",
            "prompt_version": "v", "retrieved_skus": [], "prompt_tokens": 10, "completion_tokens": 5,
            "cost_usd": 0.001, "cached": False, "latency_s": 0.1, "cache_key": f"key-{prompt_id}"}


def test_wrong_teacher_answers_go_to_review_and_human_corrections_win(tmp_path):
    human = generate_human_corrected(6, seed=9)
    teacher = [_teacher_row(f"t-{i}", row["prompt"], row["teacher_response"]) for i, row in enumerate(human)]
    teacher += [_teacher_row(f"g-{i}", f"how many volumes of {record['title']}", fact_answer("volumes", record))
                for i, record in enumerate(catalog_records()[:5])]
    uris = {name: str(tmp_path / f"{name}.parquet") for name in ("teacher", "human", "refusal")}
    storage.write_table(pa.Table.from_pylist(teacher, schema=TEACHER_RESPONSES), uris["teacher"])
    storage.write_table(pa.Table.from_pylist([{**row, "source": "human_corrected"} for row in human[:3]])
                        .select(RESPONSE_EXAMPLES.names), uris["human"])
    storage.write_table(pa.Table.from_pylist([{**row, "source": "refusal_escalation"} for row in
                                              generate_refusal_escalation(2, seed=9)]).select(RESPONSE_EXAMPLES.names),
                        uris["refusal"])

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = curation_alone(teacher_uri=uris["teacher"], human_uri=uris["human"], refusal_uri=uris["refusal"])

    review = validate_table(storage.read_table(run.outputs["review"].path), RESPONSE_REVIEW, "review",
                            on_bad_rows="fail").table
    assert set(review.column("prompt_id").to_pylist()) == {"t-3", "t-4", "t-5"}  # wrong, and no human fix
    train = validate_table(storage.read_table(run.outputs["train"].path), RESPONSE_EXAMPLES, "train",
                           on_bad_rows="fail").table.to_pylist()
    trained = {row["response"] for row in train}
    assert {row["response"] for row in human[:3]} <= trained
    assert not trained & {row["teacher_response"] for row in human}
    assert {row["source"] for row in train} == {"teacher", "human_corrected", "refusal_escalation"}
    metrics = run.outputs["metrics"].metadata
    assert metrics["replaced_by_human"] == 3 and metrics["unsupported"] == 3 and metrics["kept"] == 5
    assert storage.read_table(run.outputs["quarantine"].path).num_rows == metrics["quarantined_rows"] == 0
    assert json.loads(Path(run.outputs["manifest"].path).read_text())["curation"]["kept"] == 5
