"""intent_publish_model alone under kfp.local: a versioned folder that transformers and ONNX Runtime load."""

import json
from pathlib import Path
from typing import NamedTuple

import onnxruntime as ort
import pytest
from kfp import dsl, local
from transformers import pipeline

from mangadistill.core.onnx_int8 import INT8_FILENAME, export_onnx, quantize_int8
from mangadistill_components.intent.publish_model import intent_publish_model


class Outputs(NamedTuple):
    published: dsl.Model


def _gate_outputs(folder: Path, promote: bool) -> tuple[Path, Path]:
    folder.mkdir(parents=True)
    event = {"event": "distilled_model_eval", "student": "intent-student", "teacher": "t", "accuracy_retained": 0.99,
             "thresholds": {"accuracy_retained": {"op": ">=", "threshold": 0.98}},
             "gates": {"accuracy_retained": promote}, "promote": promote}
    (folder / "event.json").write_text(json.dumps(event))
    (folder / "report.html").write_text("<html>gate report</html>")
    return folder / "event.json", folder / "report.html"


@dsl.pipeline(name="intent-publish-alone")
def publish_alone(student_uri: str, quantized_uri: str, report_uri: str, event_uri: str, models_root: str) -> Outputs:
    student = dsl.importer(artifact_uri=student_uri, artifact_class=dsl.Model)
    quantized = dsl.importer(artifact_uri=quantized_uri, artifact_class=dsl.Model)
    report = dsl.importer(artifact_uri=report_uri, artifact_class=dsl.HTML)
    event = dsl.importer(artifact_uri=event_uri, artifact_class=dsl.Artifact)
    task = intent_publish_model(student=student.output, quantized=quantized.output, report=report.output,
                                event=event.output, models_root=models_root, model_name="intent-student",
                                run_id="run-42")
    return Outputs(task.outputs["published"])


@pytest.fixture(scope="module")
def int8_folder(tmp_path_factory, tiny_intent_classifier) -> Path:
    folder = tmp_path_factory.mktemp("int8")
    fp32 = export_onnx(str(tiny_intent_classifier), str(folder.parent / "model.onnx"), max_length=16)
    quantize_int8(fp32, str(folder / INT8_FILENAME))
    return folder


def test_publishes_a_promoted_student_that_loads_without_this_project(tmp_path, tiny_intent_classifier, int8_folder):
    event, report = _gate_outputs(tmp_path / "gate", promote=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = publish_alone(student_uri=str(tiny_intent_classifier), quantized_uri=str(int8_folder),
                        report_uri=str(report), event_uri=str(event), models_root=str(tmp_path / "models"))

    version = tmp_path / "models" / "intent-student" / "run-42"
    assert run.outputs["published"].metadata["version_uri"] == str(version)
    assert Path(run.outputs["published"].path).read_text().strip() == str(version)
    classify = pipeline("text-classification", model=str(version), device="cpu")
    assert classify("where is my order?")[0]["label"] in classify.model.config.id2label.values()
    session = ort.InferenceSession(str(version / "onnx" / "model_qint8_dynamic.onnx"))
    assert {i.name for i in session.get_inputs()} >= {"input_ids", "attention_mask"}
    assert "| `accuracy_retained` | 0.99 | >= 0.98 | yes |" in (version / "README.md").read_text()


def test_refuses_an_event_that_does_not_promote(tmp_path, tiny_intent_classifier, int8_folder):
    event, report = _gate_outputs(tmp_path / "gate", promote=False)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    with pytest.raises(RuntimeError):
        publish_alone(student_uri=str(tiny_intent_classifier), quantized_uri=str(int8_folder),
                      report_uri=str(report), event_uri=str(event), models_root=str(tmp_path / "models"))
    assert not (tmp_path / "models").exists()
