"""Publish a promoted student as a versioned model folder: `<models_root>/<name>/<run_id>/`.

The folder is what a serving team pulls: the model in the formats users load (each wing decides which, as a
`layout` of {path inside the version: local file or folder}), the gate's report and event, a model card
(README.md, Hugging Face model-card front matter) and `version.json`. Versions are immutable: a folder that
holds a complete version (its `version.json`) is never written again, so a retried publish task is a no-op,
and only an event that says `promote: true` is published.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mangadistill.core import storage

VERSION_FILE = "version.json"
CARD_FILE = "README.md"
EVENT_FILE = "distilled_model_eval.json"
REPORT_FILE = "report.html"
COUNT_KEY = re.compile(r"(^|_)(rows|queries|pairs|examples|prompts)$")
"""Event keys the model card lists under "Data": how much the gate measured on."""
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class NotPromotedError(ValueError):
    """The event does not say promote: true, so nothing is published."""


@dataclass(frozen=True)
class ModelCard:
    """What a wing says about its student beyond the event: the card's task line, how to load each format,
    and what the model is for (and not for)."""

    task: str
    pipeline_tag: str
    intended_use: str
    how_to_load: str
    limitations: str = ""
    """how_to_load may name the version's folder as VERSION_FOLDER."""


@dataclass(frozen=True)
class PublishedVersion:
    """Where the version lives, its files (relative paths) and whether this call wrote it."""

    uri: str
    files: list[str]
    written: bool

    def metadata(self) -> dict:
        """What the component puts on its output Model artifact."""
        return {"version_uri": self.uri, "files": len(self.files), "written": self.written}


def _check_name(value: str, what: str) -> str:
    if not _SAFE_NAME.match(value or ""):
        raise ValueError(f"{what} {value!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter "
                         "or digit (it becomes a folder name)")
    return value


def version_uri(models_root: str, name: str, run_id: str) -> str:
    """`<models_root>/<name>/<run_id>` (a gs:// prefix or a local folder); names that could leave the root are
    refused."""
    if not models_root:
        raise ValueError("models_root is empty: say where published models go (a gs:// prefix or a folder)")
    root = models_root.rstrip("/")
    return f"{root}/{_check_name(name, 'model name')}/{_check_name(run_id, 'run id')}"


def _gate_rows(event: Mapping) -> list[str]:
    rows = ["| gate | value | threshold | passed |", "|---|---|---|---|"]
    for metric, rule in event.get("thresholds", {}).items():
        value = event.get(metric)
        shown = f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)
        passed = "yes" if event.get("gates", {}).get(metric) else "NO"
        rows.append(f"| `{metric}` | {shown} | {rule['op']} {rule['threshold']:g} | {passed} |")
    return rows


def model_card(name: str, run_id: str, event: Mapping, card: ModelCard, files: list[str], version: str) -> str:
    """README.md of a version: front matter, the decision and every gate, data (the event's row, query, pair,
    example and prompt counts) and teacher, use, limitations, how to load (`VERSION_FOLDER` in
    `card.how_to_load` becomes `version`, the version's URI)."""
    counts = {key: value for key, value in event.items()
              if COUNT_KEY.search(key) and isinstance(value, int | float) and not isinstance(value, bool)}
    lines = [
        "---", f"pipeline_tag: {card.pipeline_tag}", "tags:", "- mangadistill", "- distillation",
        f"- {card.task}", "---", "", f"# {name} ({run_id})", "",
        f"Distilled by mangadistill's {card.task} pipeline; published because every promotion gate passed "
        f"(event `{event.get('event')}`, {event.get('timestamp', 'no timestamp')}).", "",
        "## Gates", "", *_gate_rows(event), "", "## Data and teacher", "",
        f"- student: `{event.get('student')}`; teacher: `{event.get('teacher')}`",
        *(f"- {key}: {value:g}" for key, value in sorted(counts.items())), "",
        "## Intended use", "", card.intended_use, "",
    ]
    if card.limitations:
        lines += ["## Limitations", "", card.limitations, ""]
    lines += ["## How to load", "", card.how_to_load.replace("VERSION_FOLDER", version), "",
              "## Files", "", *(f"- `{path}`" for path in files), "",
              f"The full report is `{REPORT_FILE}`; the gate's event is `{EVENT_FILE}`.", ""]
    return "\n".join(lines)


def encoder_layout(student_dir: str, int8_dir: str) -> dict[str, str]:
    """The layout of an encoder student (classifier or cross-encoder): its transformers folder at the top, the
    int8 ONNX model (`onnx_int8.INT8_FILENAME` in int8_dir) at `onnx_int8.ONNX_INT8_TARGET`."""
    from mangadistill.core.onnx_int8 import INT8_FILENAME, ONNX_INT8_TARGET  # onnxruntime: only when publishing

    return {".": student_dir, ONNX_INT8_TARGET: str(Path(int8_dir, INT8_FILENAME))}


def _stage(layout: Mapping[str, str], staging: Path) -> None:
    for target, source in layout.items():
        relative = Path(target)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"layout target {target!r} leads out of the version folder")
        destination = staging / relative
        source_path = Path(source)
        if source_path.is_dir():
            shutil.copytree(source_path, destination, dirs_exist_ok=True)
        elif source_path.is_file():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source_path, destination)
        else:
            raise FileNotFoundError(f"{source}: nothing to publish as {target!r}")


def publish_version(models_root: str, name: str, run_id: str, layout: Mapping[str, str], event_path: str,
                    report_path: str, card: ModelCard) -> PublishedVersion:
    """Write `<models_root>/<name>/<run_id>/`: the `layout`, the report, the event, README.md and, last,
    version.json (so a version without it is incomplete and is written again). NotPromotedError unless the
    event says promote: true; an existing complete version is returned as it is (written False)."""
    uri = version_uri(models_root, name, run_id)
    event = json.loads(Path(event_path).read_text())
    if event.get("promote") is not True:
        failed = sorted(metric for metric, passed in event.get("gates", {}).items() if not passed)
        raise NotPromotedError(f"{event_path}: the gate did not promote {name} (failed: {', '.join(failed) or '?'})"
                               "; nothing is published")
    marker = f"{uri}/{VERSION_FILE}"
    if storage.exists(marker):
        return PublishedVersion(uri, json.loads(storage.read_text(marker))["files"], written=False)
    with tempfile.TemporaryDirectory(prefix="mangadistill-publish-") as folder:
        staging = Path(folder)
        _stage({**layout, REPORT_FILE: report_path, EVENT_FILE: event_path}, staging)
        files = sorted([CARD_FILE, *(path.relative_to(staging).as_posix() for path in staging.rglob("*")
                                     if path.is_file())])
        (staging / CARD_FILE).write_text(model_card(name, run_id, event, card, files, uri))
        storage.upload_dir(staging, uri)
    storage.write_text(marker, json.dumps({
        "name": name, "run_id": run_id, "published": datetime.now(UTC).isoformat(timespec="seconds"),
        "student": event.get("student"), "teacher": event.get("teacher"), "files": files,
    }, indent=2))
    return PublishedVersion(uri, files, written=True)
