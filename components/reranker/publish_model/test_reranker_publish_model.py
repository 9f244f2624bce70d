"""reranker_publish_model alone under kfp.local: the CrossEncoder layout; a rejected student is never published
(the promoted path with real models runs in tests/pipelines/test_reranker_pipeline_local.py)."""

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from kfp import dsl, local

from mangadistill.core.onnx_int8 import INT8_FILENAME
from mangadistill_components.reranker.publish_model import reranker_publish_model


class Outputs(NamedTuple):
    published: dsl.Model


@dsl.pipeline(name="reranker-publish-alone")
def publish_alone(student_uri: str, quantized_uri: str, report_uri: str, event_uri: str, models_root: str) -> Outputs:
    imported = {name: dsl.importer(artifact_uri=uri, artifact_class=kind) for name, uri, kind in (
        ("student", student_uri, dsl.Model), ("quantized", quantized_uri, dsl.Model),
        ("report", report_uri, dsl.HTML), ("event", event_uri, dsl.Artifact))}
    task = reranker_publish_model(student=imported["student"].output, quantized=imported["quantized"].output,
                                  report=imported["report"].output, event=imported["event"].output,
                                  models_root=models_root, model_name="reranker-student", run_id="run-9")
    return Outputs(task.outputs["published"])


def _inputs(tmp_path: Path, promote: bool) -> dict:
    student, int8 = tmp_path / "student", tmp_path / "int8"
    student.mkdir()
    int8.mkdir()
    (student / "config.json").write_text("{}")
    (int8 / INT8_FILENAME).write_bytes(b"onnx")
    event = {"event": "distilled_model_eval", "student": "reranker-student", "teacher": "t", "ndcg_retained": 0.99,
             "thresholds": {"ndcg_retained": {"op": ">=", "threshold": 0.97}}, "gates": {"ndcg_retained": promote},
             "promote": promote}
    (tmp_path / "event.json").write_text(json.dumps(event))
    (tmp_path / "report.html").write_text("<html></html>")
    return {"student_uri": str(student), "quantized_uri": str(int8), "report_uri": str(tmp_path / "report.html"),
            "event_uri": str(tmp_path / "event.json"), "models_root": str(tmp_path / "models")}


def test_lays_out_the_cross_encoder_and_its_int8_model(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = publish_alone(**_inputs(tmp_path, promote=True))
    version = Path(run.outputs["published"].metadata["version_uri"])
    assert version == tmp_path / "models" / "reranker-student" / "run-9"
    assert (version / "config.json").is_file()
    assert (version / "onnx" / "model_qint8_dynamic.onnx").read_bytes() == b"onnx"
    assert "pipeline_tag: text-ranking" in (version / "README.md").read_text()


def test_a_rejected_student_is_never_published(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    with pytest.raises(RuntimeError):
        publish_alone(**_inputs(tmp_path, promote=False))
    assert not (tmp_path / "models").exists()
