"""response_publish_model alone under kfp.local: merged model at the top, the adapter in adapter/ (the promoted
path with a real LoRA student runs in tests/pipelines/test_response_pipeline_local.py)."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from kfp import dsl, local

from mangadistill_components.response.publish_model import response_publish_model


class Outputs(NamedTuple):
    published: dsl.Model


@dsl.pipeline(name="response-publish-alone")
def publish_alone(student_uri: str, report_uri: str, event_uri: str, models_root: str) -> Outputs:
    student = dsl.importer(artifact_uri=student_uri, artifact_class=dsl.Model)
    report = dsl.importer(artifact_uri=report_uri, artifact_class=dsl.HTML)
    event = dsl.importer(artifact_uri=event_uri, artifact_class=dsl.Artifact)
    task = response_publish_model(student=student.output, report=report.output, event=event.output,
                                  models_root=models_root, model_name="manga-student", run_id="run-3")
    return Outputs(task.outputs["published"])


def _inputs(tmp_path: Path, promote: bool) -> dict:
    for sub, name in (("merged", "model.safetensors"), ("adapter", "adapter_model.safetensors")):
        (tmp_path / "student" / sub).mkdir(parents=True)
        (tmp_path / "student" / sub / name).write_bytes(sub.encode())
    event = {"event": "distilled_model_eval", "student": "manga-student", "teacher": "t", "hallucination_rate": 0.0,
             "thresholds": {"hallucination_rate": {"op": "<=", "threshold": 0.04}},
             "gates": {"hallucination_rate": promote}, "promote": promote}
    (tmp_path / "event.json").write_text(json.dumps(event))
    (tmp_path / "report.html").write_text("<html></html>")
    return {"student_uri": str(tmp_path / "student"), "report_uri": str(tmp_path / "report.html"),
            "event_uri": str(tmp_path / "event.json"), "models_root": str(tmp_path / "models")}


def test_publishes_the_merged_model_and_the_adapter(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = publish_alone(**_inputs(tmp_path, promote=True))
    version = Path(run.outputs["published"].metadata["version_uri"])
    assert (version / "model.safetensors").read_bytes() == b"merged"
    assert (version / "adapter" / "adapter_model.safetensors").read_bytes() == b"adapter"
    assert "pipeline_tag: text-generation" in (version / "README.md").read_text()


def test_a_rejected_student_is_never_published(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    with pytest.raises(RuntimeError):
        publish_alone(**_inputs(tmp_path, promote=False))
    assert not (tmp_path / "models").exists()
