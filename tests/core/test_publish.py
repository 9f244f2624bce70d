"""core.publish: a promoted student becomes an immutable, self-describing version folder (local and gs://)."""

import json
from pathlib import Path

import pytest

from mangadistill.core import storage
from mangadistill.core.publish import (
    CARD_FILE,
    EVENT_FILE,
    REPORT_FILE,
    VERSION_FILE,
    ModelCard,
    NotPromotedError,
    publish_version,
    version_uri,
)

CARD = ModelCard(task="intent", pipeline_tag="text-classification", intended_use="Routing chat messages.",
                 how_to_load="`pipeline('text-classification', model=\"VERSION_FOLDER\")`", limitations="English only.")


def _inputs(tmp_path: Path, promote: bool = True) -> dict:
    model = tmp_path / "student"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "model.safetensors").write_bytes(b"weights")
    onnx = tmp_path / "model.int8.onnx"
    onnx.write_bytes(b"onnx")
    event = {"event": "distilled_model_eval", "student": "intent-student", "teacher": "teacher-x",
             "accuracy_retained": 0.991, "eval_rows": 1200, "ece": 0.2,
             "thresholds": {"accuracy_retained": {"op": ">=", "threshold": 0.98},
                            "ece": {"op": "<=", "threshold": 0.1}},
             "gates": {"accuracy_retained": True, "ece": promote}, "promote": promote,
             "timestamp": "2026-11-30T03:00:00Z"}
    (tmp_path / "event.json").write_text(json.dumps(event))
    (tmp_path / "report.html").write_text("<html>report</html>")
    return {"layout": {".": str(model), "onnx/model_qint8_dynamic.onnx": str(onnx)},
            "event_path": str(tmp_path / "event.json"), "report_path": str(tmp_path / "report.html"), "card": CARD}


def test_a_promoted_student_is_published_with_a_model_card(tmp_path):
    root = tmp_path / "models"
    version = publish_version(str(root), "intent-student", "run-1", **_inputs(tmp_path))

    folder = root / "intent-student" / "run-1"
    assert version.uri == str(folder) and version.written
    assert (folder / "model.safetensors").read_bytes() == b"weights"
    assert (folder / "onnx" / "model_qint8_dynamic.onnx").read_bytes() == b"onnx"
    assert (folder / REPORT_FILE).read_text() == "<html>report</html>"
    assert json.loads((folder / EVENT_FILE).read_text())["promote"] is True
    card = (folder / CARD_FILE).read_text()
    assert card.startswith("---\npipeline_tag: text-classification\n")
    assert "| `accuracy_retained` | 0.991 | >= 0.98 | yes |" in card and "| `ece` | 0.2 | <= 0.1 | yes |" in card
    assert "- eval_rows: 1200\n" in card and "teacher: `teacher-x`" in card and "English only." in card
    assert "accuracy_retained: 0.991" not in card, "gated metrics are in the gate table, not the data list"
    assert f"model=\"{folder}\"" in card
    recorded = json.loads((folder / VERSION_FILE).read_text())
    assert recorded["files"] == version.files and "onnx/model_qint8_dynamic.onnx" in recorded["files"]
    assert set(recorded["files"]) == {path.relative_to(folder).as_posix() for path in folder.rglob("*")
                                      if path.is_file()} - {VERSION_FILE}


def test_a_rejected_student_is_never_published(tmp_path):
    with pytest.raises(NotPromotedError, match=r"did not promote intent-student \(failed: ece\)"):
        publish_version(str(tmp_path / "models"), "intent-student", "run-1", **_inputs(tmp_path, promote=False))
    assert not (tmp_path / "models").exists()


def test_a_retry_leaves_a_complete_version_alone_and_finishes_an_incomplete_one(tmp_path):
    inputs = _inputs(tmp_path)
    first = publish_version(str(tmp_path / "models"), "intent-student", "run-1", **inputs)
    Path(inputs["report_path"]).write_text("<html>changed</html>")
    again = publish_version(str(tmp_path / "models"), "intent-student", "run-1", **inputs)
    assert not again.written and again.files == first.files
    assert (Path(first.uri) / REPORT_FILE).read_text() == "<html>report</html>", "versions are immutable"

    (Path(first.uri) / VERSION_FILE).unlink()  # a publish that died before its last write
    finished = publish_version(str(tmp_path / "models"), "intent-student", "run-1", **inputs)
    assert finished.written and (Path(first.uri) / REPORT_FILE).read_text() == "<html>changed</html>"


@pytest.mark.parametrize(("name", "run_id"), [("../x", "run-1"), ("intent-student", "a/b"), ("", "run-1"),
                                              ("intent-student", "..")])
def test_names_that_could_leave_the_models_root_are_refused(tmp_path, name, run_id):
    with pytest.raises(ValueError, match="folder name"):
        version_uri(str(tmp_path), name, run_id)


def test_a_layout_target_cannot_leave_the_version_folder(tmp_path):
    inputs = _inputs(tmp_path)
    inputs["layout"]["../escape.onnx"] = inputs["layout"].pop("onnx/model_qint8_dynamic.onnx")
    with pytest.raises(ValueError, match="leads out of the version folder"):
        publish_version(str(tmp_path / "models"), "intent-student", "run-1", **inputs)


def test_publishes_to_a_gcs_bucket(tmp_path, gcs_bucket):
    version = publish_version(f"gs://{gcs_bucket}/models", "intent-student", "run-7", **_inputs(tmp_path))
    assert version.uri == f"gs://{gcs_bucket}/models/intent-student/run-7"
    assert storage.read_bytes(f"{version.uri}/onnx/model_qint8_dynamic.onnx") == b"onnx"
    assert json.loads(storage.read_text(f"{version.uri}/{VERSION_FILE}"))["run_id"] == "run-7"
    assert "intended_use" not in storage.read_text(f"{version.uri}/{CARD_FILE}")
