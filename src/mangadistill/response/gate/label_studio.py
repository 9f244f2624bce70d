"""Label Studio instead of `mangadistill review`: a review packet out as Label Studio tasks, its JSON export back
in as completed reviews the gate reads (`review.score_human_reviews`).

- `export_label_studio(packet_uri, tasks_json_path)`: one task per REVIEW_PACKET row, {"data": {"packet_id",
  "prompt", "answer_a", "answer_b"}}, in Label Studio's JSON import format, and beside it (<tasks stem>
  .label_config.xml) LABEL_CONFIG, the labelling interface to paste into the project (Settings -> Labeling
  Interface -> Code): the `<Pairwise>` tag over the two answers (click the better one), a `<Choices>` control for
  "Tie" and "Both bad", and an optional note. The packet is already blinded (which model is A is drawn per row
  and kept in the separate key), so the tasks say nothing about the models either.
- `import_label_studio(export_json_path, reviews_uri, packet_uri=...)`: reads the project's JSON export (Export ->
  JSON: a list of tasks, each with "data" and "annotations"; an annotation's "result" holds the pairwise region
  {"type": "pairwise", "value": {"selected": "left" | "right"}} and/or the choices region {"type": "choices",
  "value": {"choices": ["Tie" | "Both bad"]}}) and writes one COMPLETED_REVIEWS row per annotation: packet_id,
  choice (left -> a, right -> b, Tie -> tie, Both bad -> both_bad), reviewer (the annotator's e-mail, else
  "label-studio-user-<id>"), plus note, reviewed_at and the Label Studio task and annotation ids.

Import rules: an annotation the annotator skipped (was_cancelled) is skipped and counted; a task without any
other annotation raises LabelStudioImportError unless allow_unannotated (then it is skipped and counted). Anything
else that cannot be read raises LabelStudioImportError naming the file and the first bad task: not a JSON list
of tasks (a JSON-MIN or CSV export), a missing or unknown packet_id, a side that is not left/right, a choice that
is not Tie/Both bad, an annotation with neither or with both a side and Tie/Both bad, or the same annotator twice
on one packet. Nothing is dropped without being counted in the returned LabelStudioImport.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.response.contracts import REVIEW_PACKET

PAIRWISE_NAME = "preference"
VERDICT_NAME = "verdict"
NOTE_NAME = "note"
SIDES = {"left": "a", "right": "b"}
"""Pairwise `value.selected` -> the packet's choice: answer_a is the left object, answer_b the right."""
VERDICTS = {"Tie": "tie", "Both bad": "both_bad"}
"""The Choices control's values -> the packet's choice."""
DEFAULT_TASKS_NAME = "label_studio_tasks.json"
CONFIG_SUFFIX = ".label_config.xml"
LABEL_CONFIG = f"""<View>
  <Header value="Which answer serves the customer better? Click it, or pick Tie / Both bad below."/>
  <Text name="prompt" value="$prompt"/>
  <Pairwise name="{PAIRWISE_NAME}" toName="answer_a,answer_b"/>
  <View style="display: flex; gap: 1em;">
    <View style="flex: 1;"><Header value="A" size="5"/><Text name="answer_a" value="$answer_a"/></View>
    <View style="flex: 1;"><Header value="B" size="5"/><Text name="answer_b" value="$answer_b"/></View>
  </View>
  <Choices name="{VERDICT_NAME}" toName="prompt" choice="single" showInline="true">
    <Choice value="Tie"/>
    <Choice value="Both bad"/>
  </Choices>
  <TextArea name="{NOTE_NAME}" toName="prompt" placeholder="Note (optional)" rows="2" maxSubmissions="1"/>
</View>
"""
"""The labelling interface the exported tasks are made for (Label Studio's Pairwise template, plus Tie / Both bad
and a note)."""
IMPORTED_REVIEWS = pa.schema([
    pa.field("packet_id", pa.string(), nullable=False),
    pa.field("choice", pa.string(), nullable=False),
    pa.field("reviewer", pa.string()),
    pa.field("note", pa.string()),
    pa.field("reviewed_at", pa.string()),
    pa.field("label_studio_task", pa.string()),
    pa.field("label_studio_annotation", pa.string()),
])
"""COMPLETED_REVIEWS' columns and what Label Studio adds (the gate ignores the extra columns)."""


class LabelStudioImportError(ValueError):
    """A Label Studio export the import refuses; the message names the file and the first bad task."""

    def __init__(self, source: str, task: str | None, problem: str) -> None:
        super().__init__(f"{source}: {task}: {problem}" if task else f"{source}: {problem}")
        self.source, self.task, self.problem = source, task, problem


@dataclass(frozen=True)
class LabelStudioExport:
    tasks_uri: str
    config_uri: str
    tasks: int


@dataclass(frozen=True)
class LabelStudioImport:
    """What an import read and wrote: every task and annotation is either a review or counted as skipped."""

    reviews_uri: str
    tasks: int
    reviews: int
    skipped_cancelled: int
    """Annotations the annotator skipped (Label Studio's Skip: was_cancelled)."""
    skipped_unannotated: int
    """Tasks with no annotation but skipped ones (only with allow_unannotated)."""

    def summary(self) -> str:
        return (f"{self.reviews} reviews from {self.tasks} tasks written to {self.reviews_uri}; skipped "
                f"{self.skipped_cancelled} cancelled annotations and {self.skipped_unannotated} unannotated tasks")


def config_uri_for(tasks_uri: str) -> str:
    """The labelling config's path beside the tasks: tasks.json -> tasks.label_config.xml."""
    stem, dot, suffix = tasks_uri.rpartition(".")
    base = stem if dot and "/" not in suffix else tasks_uri
    return base + CONFIG_SUFFIX


def default_tasks_out(packet_uri: str) -> str:
    """DEFAULT_TASKS_NAME beside a local packet; in the working folder for a remote (gs://) one."""
    return DEFAULT_TASKS_NAME if "://" in packet_uri else str(Path(packet_uri).with_name(DEFAULT_TASKS_NAME))


def _packet_rows(packet_uri: str) -> list[dict[str, Any]]:
    return validate_table(storage.read_table(packet_uri), REVIEW_PACKET, packet_uri, on_bad_rows="fail").table \
        .to_pylist()


def export_label_studio(packet_uri: str, tasks_json_path: str) -> LabelStudioExport:
    """Write the packet's rows as Label Studio tasks (a JSON list) to `tasks_json_path` and LABEL_CONFIG beside
    it (`config_uri_for`); DataContractError when the packet breaks REVIEW_PACKET."""
    rows = _packet_rows(packet_uri)
    tasks = [{"data": {"packet_id": row["packet_id"], "prompt": row["prompt"], "answer_a": row["answer_a"],
                       "answer_b": row["answer_b"]}} for row in rows]
    config_uri = config_uri_for(tasks_json_path)
    storage.write_text(tasks_json_path, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
    storage.write_text(config_uri, LABEL_CONFIG)
    return LabelStudioExport(tasks_json_path, config_uri, len(tasks))


def _reviewer(annotation: dict[str, Any]) -> str | None:
    """The annotator: completed_by's e-mail (an object in some exports), else label-studio-user-<id>."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        email = who.get("email")
        if isinstance(email, str) and email.strip():
            return email.strip()
        who = who.get("id")
    if isinstance(who, int | str) and not isinstance(who, bool) and str(who).strip():
        return f"label-studio-user-{str(who).strip()}"
    return None


def _choice(result: Any, source: str, task: str) -> tuple[str, str | None]:
    """(choice, note) from one annotation's result list; LabelStudioImportError naming `task` otherwise."""
    if not isinstance(result, list):
        raise LabelStudioImportError(source, task, "the annotation's 'result' is not a list")
    sides, verdicts, notes = [], [], []
    for region in result:
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            raise LabelStudioImportError(source, task, f"a result region is not an object with a 'value': "
                                                       f"{str(region)[:120]}")
        kind, value = region.get("type"), region["value"]
        if kind == "pairwise" or "selected" in value:
            selected = value.get("selected")
            if selected not in SIDES:
                raise LabelStudioImportError(source, task, f"unknown choice: pairwise selected {selected!r}, "
                                                           "expected 'left' or 'right'")
            sides.append(SIDES[selected])
        elif kind == "choices" or "choices" in value:
            chosen = value.get("choices")
            if not isinstance(chosen, list) or len(chosen) != 1 or chosen[0] not in VERDICTS:
                raise LabelStudioImportError(source, task, f"unknown choice: {chosen!r}, expected one of "
                                                           f"{list(VERDICTS)}")
            verdicts.append(VERDICTS[chosen[0]])
        elif kind == "textarea" or "text" in value:
            text = value.get("text")
            notes.extend(t for t in (text if isinstance(text, list) else [text]) if isinstance(t, str) and t.strip())
        else:
            raise LabelStudioImportError(source, task, f"unknown result type {kind!r}: was the project labelled "
                                                       f"with the exported {CONFIG_SUFFIX}?")
    picked = sides + verdicts
    if not picked:
        raise LabelStudioImportError(source, task, "the annotation has no choice: neither a side (click an "
                                                   "answer) nor Tie / Both bad")
    if len(picked) > 1:
        raise LabelStudioImportError(source, task, f"the annotation has more than one choice {picked}: a side "
                                                   "and Tie / Both bad exclude each other")
    return picked[0], "\n".join(n.strip() for n in notes) or None


def import_label_studio(export_json_path: str, reviews_uri: str, packet_uri: str = "",
                        allow_unannotated: bool = False) -> LabelStudioImport:
    """Read a Label Studio JSON export of tasks made by `export_label_studio` and write its annotations to
    `reviews_uri` (.jsonl or parquet) as completed reviews `review.score_human_reviews` reads. With `packet_uri`
    every task's packet_id must be one of that packet's (and its texts the packet's). The module docstring says
    what is skipped and counted and what raises LabelStudioImportError."""
    source = export_json_path
    try:
        tasks = json.loads(storage.read_text(export_json_path))
    except json.JSONDecodeError as error:
        raise LabelStudioImportError(source, None, f"not JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(tasks, list) or not tasks:
        raise LabelStudioImportError(source, None, "expected Label Studio's JSON export: a non-empty list of tasks")
    packet = {row["packet_id"]: row for row in _packet_rows(packet_uri)} if packet_uri else None
    rows, seen = [], set()
    cancelled = unannotated = 0
    for position, task in enumerate(tasks, start=1):
        task_id = task.get("id") if isinstance(task, dict) else None
        name = f"task {task_id if task_id is not None else '#' + str(position)}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise LabelStudioImportError(source, name, "not a task with 'data' (a JSON-MIN or CSV export? "
                                                       "export JSON instead)")
        packet_id = task["data"].get("packet_id")
        if not isinstance(packet_id, str) or not packet_id.strip():
            raise LabelStudioImportError(source, name, "missing packet_id in its data (tasks must come from "
                                                       "`mangadistill label-studio export`)")
        name = f"{name} (packet_id {packet_id})"
        if packet is not None:
            if packet_id not in packet:
                raise LabelStudioImportError(source, name, f"unknown packet_id: not in the packet {packet_uri}")
            if any(task["data"].get(column) != packet[packet_id][column]
                   for column in ("prompt", "answer_a", "answer_b")):
                raise LabelStudioImportError(source, name, f"its prompt or answers differ from those of the packet "
                                                           f"{packet_uri} (tasks of another packet?)")
        annotations = task.get("annotations")
        if annotations is None and "completions" in task:  # exports of Label Studio before 1.0
            annotations = task["completions"]
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            raise LabelStudioImportError(source, name, "'annotations' is missing or not a list of objects")
        kept = [a for a in annotations if not a.get("was_cancelled")]
        cancelled += len(annotations) - len(kept)
        if not kept:
            if not allow_unannotated:
                skipped = f", {len(annotations)} cancelled" if annotations else ""
                raise LabelStudioImportError(source, name, f"missing annotation: nothing submitted for this task"
                                                           f"{skipped} (allow_unannotated / --allow-unannotated "
                                                           "skips such tasks and counts them)")
            unannotated += 1
            continue
        for annotation in kept:
            choice, note = _choice(annotation.get("result"), source, name)
            reviewer = _reviewer(annotation)
            if (packet_id, reviewer) in seen:
                raise LabelStudioImportError(source, name, f"{reviewer or 'an unnamed annotator'} annotated this "
                                                           "packet twice")
            seen.add((packet_id, reviewer))
            annotation_id = annotation.get("id")
            rows.append({"packet_id": packet_id, "choice": choice, "reviewer": reviewer, "note": note,
                         "reviewed_at": annotation.get("updated_at") or annotation.get("created_at"),
                         "label_studio_task": None if task_id is None else str(task_id),
                         "label_studio_annotation": None if annotation_id is None else str(annotation_id)})
    if not rows:
        raise LabelStudioImportError(source, None, f"no annotation to import ({len(tasks)} tasks: {cancelled} "
                                                   f"cancelled annotations, {unannotated} unannotated tasks)")
    storage.write_table(pa.Table.from_pylist(rows, schema=IMPORTED_REVIEWS), reviews_uri)
    return LabelStudioImport(reviews_uri, len(tasks), len(rows), cancelled, unannotated)
