"""response_dataset alone with kfp.local: sample prompts with personal data and duplicates are redacted,
de-duplicated, split and cut to the mixture's targets."""

import json
import re
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
from kfp import dsl, local
from kfp.dsl import Dataset, Metrics

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.response.contracts import PREPARED_PROMPTS, RESPONSE_EXAMPLES
from mangadistill.sample_data.responses import (
    generate_human_corrected,
    generate_production_prompts,
    generate_refusal_escalation,
)
from mangadistill_components.response.dataset import response_dataset

SCALE = 0.002  # targets: 50 production prompts, 10 human-corrected, 4 refusal/escalation
RAW_PERSONAL_DATA = re.compile(r"@|\d{4}[ -]?\d{4}[ -]?\d{4}|\(\d{3}\)")


class DatasetOutputs(NamedTuple):
    prompts: Dataset
    human_corrected_examples: Dataset
    refusal_escalation_examples: Dataset
    quarantine: Dataset
    manifest: Dataset
    metrics: Metrics


@dsl.pipeline(name="response-dataset-alone")
def dataset_alone(prompts_uri: str, human_uri: str, refusal_uri: str) -> DatasetOutputs:
    task = response_dataset(
        production_prompts=dsl.importer(artifact_uri=prompts_uri, artifact_class=dsl.Dataset).output,
        human_corrected=dsl.importer(artifact_uri=human_uri, artifact_class=dsl.Dataset).output,
        refusal_escalation=dsl.importer(artifact_uri=refusal_uri, artifact_class=dsl.Dataset).output,
        scale=SCALE, validation_fraction=0.2, seed=1,
    )
    return DatasetOutputs(*(task.outputs[name] for name in DatasetOutputs._fields))


def test_prompts_are_redacted_deduplicated_and_cut_to_the_mixture(tmp_path):
    prompts = generate_production_prompts(60, seed=5)
    uris = {name: str(tmp_path / f"{name}.{ext}") for name, ext in
            (("prompts", "jsonl"), ("human", "parquet"), ("refusal", "parquet"))}
    storage.write_table(pa.Table.from_pylist([{"prompt": p["prompt"]} for p in prompts]), uris["prompts"])
    storage.write_table(pa.Table.from_pylist(generate_human_corrected(12, seed=5)), uris["human"])
    storage.write_table(pa.Table.from_pylist(generate_refusal_escalation(6, seed=5)), uris["refusal"])
    assert any(RAW_PERSONAL_DATA.search(p["prompt"]) for p in prompts)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = dataset_alone(prompts_uri=uris["prompts"], human_uri=uris["human"], refusal_uri=uris["refusal"])

    prepared = validate_table(storage.read_table(run.outputs["prompts"].path), PREPARED_PROMPTS, "prompts",
                              on_bad_rows="fail").table
    assert prepared.num_rows == 50
    assert not any(RAW_PERSONAL_DATA.search(text) for text in prepared.column("prompt").to_pylist())
    for output, rows in (("human_corrected_examples", 10), ("refusal_escalation_examples", 4)):
        table = storage.read_table(run.outputs[output].path)
        assert validate_table(table, RESPONSE_EXAMPLES, output, on_bad_rows="fail").table.num_rows == rows
    metrics = run.outputs["metrics"].metadata
    quarantine = storage.read_table(run.outputs["quarantine"].path)
    assert quarantine.num_rows == metrics["quarantined_rows"] >= metrics["duplicates"] > 0
    assert sum(value for name, value in metrics.items() if name.startswith("redacted_")) > 0
    manifest = json.loads(Path(run.outputs["manifest"].path).read_text())
    assert manifest["sources"]["human_corrected"]["target"] == 10
