"""Label Studio pairwise export/import: a packet out as tasks, a Label Studio-shaped JSON export of them back in
as completed reviews the gate scores; bad exports refused with the file and the first bad task named."""

import json
import xml.etree.ElementTree as ET

import pytest

from mangadistill.core import storage
from mangadistill.response.gate.label_studio import (
    LABEL_CONFIG,
    LabelStudioImportError,
    config_uri_for,
    export_label_studio,
    import_label_studio,
)
from mangadistill.response.gate.review import build_review_packet, score_human_reviews
from mangadistill_pipelines.cli import main

SLICES = ("policy", "escalation", "factuality", "general", "policy", "general")


@pytest.fixture
def packet(tmp_path):
    """(packet uri, key table): 6 blinded pairs, student vs base student."""
    eval_rows = [{"eval_id": f"ev-{i}", "slice": name, "prompt": f"Question {i}: is volume {i} <b>out</b>?"}
                 for i, name in enumerate(SLICES)]
    table, key = build_review_packet(eval_rows, [f"student answer {i}" for i in range(6)],
                                     [f"base answer {i}" for i in range(6)], seed=3)
    uri = str(tmp_path / "review_packet.parquet")
    storage.write_table(table, uri)
    return uri, key


def _region(kind: str, value: dict, from_name: str, to_name: str) -> dict:
    return {"id": f"r-{from_name}", "from_name": from_name, "to_name": to_name, "type": kind, "value": value,
            "origin": "manual"}


def _result(verdict: str, note: str = "") -> list[dict]:
    """An annotation's result as Label Studio writes it for the exported config: a click on the left/right answer
    (Pairwise), or the Tie / Both bad choice; a note as a TextArea region."""
    regions = []
    if verdict in ("left", "right"):
        regions.append(_region("pairwise", {"selected": verdict}, "preference", "answer_a,answer_b"))
    else:
        regions.append(_region("choices", {"choices": [verdict]}, "verdict", "prompt"))
    if note:
        regions.append(_region("textarea", {"text": [note]}, "note", "prompt"))
    return regions


def _label_studio_export(tasks: list[dict], verdicts: list[list[tuple]]) -> list[dict]:
    """The JSON export of a project into which `tasks` were imported: ids given, one annotation per (verdict,
    annotator id[, cancelled]) of each task."""
    exported, annotation_id = [], 100
    for task_id, (task, task_verdicts) in enumerate(zip(tasks, verdicts, strict=True), start=1):
        annotations = []
        for verdict, annotator, *cancelled in task_verdicts:
            annotation_id += 1
            annotations.append({
                "id": annotation_id, "completed_by": annotator,
                "result": [] if cancelled else _result(verdict, note="price checked" if annotator == 7 else ""),
                "was_cancelled": bool(cancelled), "ground_truth": False,
                "created_at": "2026-11-30T10:00:00.000000Z", "updated_at": "2026-11-30T10:01:00.000000Z",
                "lead_time": 12.5, "task": task_id, "project": 4})
        exported.append({"id": task_id, "data": task["data"], "annotations": annotations, "predictions": [],
                         "meta": {}, "created_at": "2026-11-30T09:00:00.000000Z", "project": 4})
    return exported


def _write(tmp_path, exported, name="export.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(exported))
    return str(path)


def test_export_writes_one_task_per_packet_row_and_a_pairwise_config(tmp_path, packet):
    uri, _ = packet
    done = export_label_studio(uri, str(tmp_path / "ls" / "tasks.json"))
    assert done.config_uri == str(tmp_path / "ls" / "tasks.label_config.xml")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    rows = storage.read_table(uri).to_pylist()
    assert done.tasks == len(tasks) == len(rows) == 6
    assert [task["data"] for task in tasks] == rows  # packet_id, prompt, answer_a, answer_b, in the packet's order
    assert set(tasks[0]) == {"data"}
    config = ET.fromstring((tmp_path / "ls" / "tasks.label_config.xml").read_text())
    pairwise = config.find(".//Pairwise")
    assert pairwise is not None and pairwise.get("toName") == "answer_a,answer_b"
    texts = {text.get("name"): text.get("value") for text in config.iter("Text")}
    assert texts == {"prompt": "$prompt", "answer_a": "$answer_a", "answer_b": "$answer_b"}
    assert [c.get("value") for c in config.iter("Choice")] == ["Tie", "Both bad"]
    assert config_uri_for("gs://bucket.x/reviews/tasks") == "gs://bucket.x/reviews/tasks.label_config.xml"


def test_imported_reviews_are_scored_by_the_gate_with_the_right_wins(tmp_path, packet):
    uri, key = packet
    export_label_studio(uri, str(tmp_path / "tasks.json"))
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    by_packet = {row["packet_id"]: row for row in key.to_pylist()}

    def side_of(task, model):  # which side (left = answer_a) shows `model`'s answer
        return "left" if by_packet[task["data"]["packet_id"]]["model_a"] == model else "right"

    verdicts = [
        [(side_of(tasks[0], "student"), 7), (side_of(tasks[0], "base_student"), {"id": 8, "email": "ana@x.io"})],
        [(side_of(tasks[1], "student"), 7)],
        [(side_of(tasks[2], "base_student"), 7), ("left", 9, "cancelled")],
        [("Tie", 7)],
        [("Both bad", 7)],
        [(side_of(tasks[5], "student"), 7)],
    ]
    out = str(tmp_path / "reviews" / "completed_reviews.jsonl")
    done = import_label_studio(_write(tmp_path, _label_studio_export(tasks, verdicts)), out, packet_uri=uri)
    assert (done.tasks, done.reviews, done.skipped_cancelled, done.skipped_unannotated) == (6, 7, 1, 0)
    rows = storage.read_table(out).to_pylist()
    assert rows[0]["reviewer"] == "label-studio-user-7" and rows[1]["reviewer"] == "ana@x.io"
    assert rows[0]["note"] == "price checked" and rows[1]["note"] is None
    assert [row["choice"] for row in rows[4:6]] == ["tie", "both_bad"]
    result = score_human_reviews(out, key)
    assert result.quarantine.num_rows == 0
    assert (result.reviews, result.reviewed_packets) == (7, 6)
    assert (result.student_wins, result.base_wins, result.ties, result.both_bad) == (3, 2, 1, 1)
    assert result.win_rate == pytest.approx((3 + 0.5 * 2) / 7)
    assert result.status.startswith("complete")


def test_the_cli_exports_and_imports(tmp_path, packet, capsys):
    uri, key = packet
    assert main(["label-studio", "export", uri]) == 0
    tasks_path = tmp_path / "label_studio_tasks.json"  # beside the packet
    assert (tmp_path / "label_studio_tasks.label_config.xml").read_text() == LABEL_CONFIG
    tasks = json.loads(tasks_path.read_text())
    export = _write(tmp_path, _label_studio_export(tasks, [[("Tie", 1)]] * len(tasks)))
    out = tmp_path / "reviews.parquet"
    assert main(["label-studio", "import", export, "--packet", uri, "--out", str(out)]) == 0
    assert "6 reviews from 6 tasks" in capsys.readouterr().out
    assert score_human_reviews(str(out), key).ties == 6
    bad = _write(tmp_path, _label_studio_export(tasks, [[("Tie", 1)]] + [[]] * 5), "bad.json")
    assert main(["label-studio", "import", bad, "--packet", uri, "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "missing annotation" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_unannotated_tasks_are_refused_or_skipped_and_counted(tmp_path, packet):
    uri, key = packet
    tasks = json.loads(storage.read_text(export_label_studio(uri, str(tmp_path / "t.json")).tasks_uri))
    verdicts = [[("left", 1)], [], [("right", 1)], [("left", 2, "cancelled")], [("Tie", 1)], [("left", 1)]]
    export = _write(tmp_path, _label_studio_export(tasks, verdicts))
    with pytest.raises(LabelStudioImportError, match=rf"export\.json: task 2 \(packet_id "
                                                     rf"{tasks[1]['data']['packet_id']}\): missing annotation"):
        import_label_studio(export, str(tmp_path / "r.jsonl"), packet_uri=uri)
    done = import_label_studio(export, str(tmp_path / "r.jsonl"), packet_uri=uri, allow_unannotated=True)
    assert (done.reviews, done.skipped_cancelled, done.skipped_unannotated) == (4, 1, 2)
    result = score_human_reviews(str(tmp_path / "r.jsonl"), key)
    assert result.win_rate is None and result.status.startswith("awaiting human review: 2 of 6 packets")


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t[2]["data"].update(packet_id="pk-000000000000"), r"task 3 \(packet_id pk-000000000000\): unknown "
                                                                 r"packet_id"),
    (lambda t: t[1]["data"].pop("packet_id"), r"task 2: missing packet_id"),
    (lambda t: t[3]["data"].update(answer_a="edited"), r"task 4 \(packet_id pk-\w+\): its prompt or answers differ"),
    (lambda t: t[4]["annotations"][0]["result"][0]["value"].update(selected="none"),
     r"task 5 \(packet_id pk-\w+\): unknown choice: pairwise selected 'none'"),
    (lambda t: t[0]["annotations"][0]["result"][0]["value"].update(choices=["Maybe"]),
     r"task 1 \(packet_id pk-\w+\): unknown choice: \['Maybe'\]"),
    (lambda t: t[5]["annotations"][0]["result"].extend(_result("Tie")), r"task 6 .*more than one choice"),
    (lambda t: t[5]["annotations"][0].update(result=[]), r"task 6 .*has no choice"),
    (lambda t: t[2]["annotations"].append(dict(t[2]["annotations"][0], id=999)),
     r"task 3 .*label-studio-user-1 annotated this packet twice"),
    (lambda t: t[2]["annotations"][0]["result"].append(_region("rating", {"rating": 4}, "stars", "prompt")),
     r"task 3 .*unknown result type 'rating'"),
])
def test_bad_exports_name_the_file_and_the_first_bad_task(tmp_path, packet, change, message):
    uri, _ = packet
    tasks = json.loads(storage.read_text(export_label_studio(uri, str(tmp_path / "t.json")).tasks_uri))
    exported = _label_studio_export(tasks, [[("Tie", 1)], [("left", 1)], [("right", 1)], [("left", 1)],
                                            [("right", 1)], [("left", 1)]])
    change(exported)
    export = _write(tmp_path, exported)
    with pytest.raises(LabelStudioImportError, match=rf"^{tmp_path}/export\.json: {message}"):
        import_label_studio(export, str(tmp_path / "r.jsonl"), packet_uri=uri)
    assert not (tmp_path / "r.jsonl").exists()  # nothing written from a refused export


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"not JSON"),
    (json.dumps({"tasks": []}), r"a non-empty list of tasks"),
    (json.dumps([{"id": 1, "packet_id": "pk-1", "preference": "left"}]), r"task 1: not a task with 'data' "
                                                                         r"\(a JSON-MIN"),
])
def test_exports_of_another_shape_are_refused(tmp_path, packet, content, message):
    path = tmp_path / "export.json"
    path.write_text(content)
    with pytest.raises(LabelStudioImportError, match=message):
        import_label_studio(str(path), str(tmp_path / "r.jsonl"), packet_uri=packet[0])


def test_only_cancelled_annotations_import_nothing_and_say_why(tmp_path, packet):
    uri, _ = packet
    tasks = json.loads(storage.read_text(export_label_studio(uri, str(tmp_path / "t.json")).tasks_uri))
    export = _write(tmp_path, _label_studio_export(tasks, [[("left", 1, "cancelled")]] * len(tasks)))
    with pytest.raises(LabelStudioImportError, match=r"task 1 \(packet_id pk-\w+\): missing annotation: nothing "
                                                     r"submitted for this task, 1 cancelled"):
        import_label_studio(export, str(tmp_path / "r.jsonl"), packet_uri=uri)
    with pytest.raises(LabelStudioImportError, match=r"export\.json: no annotation to import \(6 tasks: 6 "
                                                     r"cancelled annotations, 6 unannotated tasks\)"):
        import_label_studio(export, str(tmp_path / "r.jsonl"), packet_uri=uri, allow_unannotated=True)
    assert not (tmp_path / "r.jsonl").exists()
