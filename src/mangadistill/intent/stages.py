"""The intent pipeline's stages, one function per component: read inputs by URI (local path or gs://), validate
them against their contract, do the work, write outputs and a quarantine table, and return the metrics the
component logs. Each component in components/intent/<stage>/ calls exactly one of these.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.core.events import json_safe
from mangadistill.core.publish import ModelCard, PublishedVersion, encoder_layout, publish_version
from mangadistill.core.stage_io import loggable, quarantine_metrics, read_valid
from mangadistill.intent.contracts import (
    HANDWRITTEN_MESSAGES,
    LABELLED_MESSAGES,
    MEMBER_VOTES,
    MESSAGES,
    SOFT_LABELS,
    intent_contract,
    read_intent_table,
)
from mangadistill.intent.ensemble import EnsembleConfig, ensemble_soft_labels
from mangadistill.intent.labeling import LabelingConfig, label_messages
from mangadistill.intent.labels import INTENTS, TEACHER_ID2LABEL, load_label_set
from mangadistill.intent.training import TrainConfig, train_classifier

if TYPE_CHECKING:
    from mangadistill.intent.gate import EvalSetUris, IntentGateOutcome


def run_teacher_labeling(
    messages_uri: str, votes_uri: str, quarantine_uri: str, config: LabelingConfig,
    on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """MESSAGES (extra columns ignored) -> MEMBER_VOTES + QUARANTINE."""
    validated = read_valid(messages_uri, MESSAGES, on_bad_rows, quarantine_uri)
    votes, summary = label_messages(validated.table, config)
    storage.write_table(votes, votes_uri)
    return loggable({**summary, **quarantine_metrics(validated)})


def run_soft_label_ensemble(
    votes_uri: str, soft_labels_uri: str, report_uri: str, quarantine_uri: str, config: EnsembleConfig,
    on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """MEMBER_VOTES -> SOFT_LABELS + a JSON report (agreement, entropy, examples) + QUARANTINE."""
    validated, labels = read_intent_table(votes_uri, MEMBER_VOTES, on_bad_rows, quarantine_uri)
    table, report = ensemble_soft_labels(validated.table, config, labels)
    storage.write_table(table, soft_labels_uri)
    report = {"config": asdict(config), **report, **quarantine_metrics(validated)}
    storage.write_text(report_uri, json.dumps(json_safe(report), indent=2, allow_nan=False))
    return loggable(report)


def run_distillation_training(
    soft_labels_uri: str, student_model: str, output_dir: str, quarantine_uri: str, config: TrainConfig,
    checkpoint_dir: str = "", on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """SOFT_LABELS -> a student classifier folder trained on β·CE_w(hard) + (1−β)·T²·KL_w(soft ‖ student)
    (`losses.soft_label_distillation_loss`) + QUARANTINE; checkpoint_dir, when given, holds per-epoch
    checkpoints that a rerun resumes from. The student's id2label is the label set the soft labels record."""
    from mangadistill.core.models import resolve_model

    validated, labels = read_intent_table(soft_labels_uri, SOFT_LABELS, on_bad_rows, quarantine_uri)
    table = validated.table
    soft = np.asarray(table.column("soft_label").to_pylist(), dtype=np.float32)
    result = train_classifier(
        resolve_model(student_model), table.column("text").to_pylist(), table.column("hard_label").to_pylist(),
        labels.names, output_dir, config, soft_labels=soft, checkpoint_dir=checkpoint_dir or None,
    )
    return loggable({
        "train_rows": table.num_rows, "final_loss": result.epoch_losses[-1], "train_seconds": result.train_seconds,
        "parameters": result.num_parameters, "resumed_from_epoch": result.resumed_from_epoch,
        **quarantine_metrics(validated),
    })


DEMO_TEACHER_CONFIG = TrainConfig(beta=1.0, epochs=2, freeze_layers=8, learning_rate=1e-4, batch_size=16)
"""The demo teacher: hard labels only, two epochs, the embeddings and first 8 encoder layers frozen."""


def bootstrap_intent_teacher(
    labelled_uri: str, base_model: str, output_dir: str, config: TrainConfig = DEMO_TEACHER_CONFIG,
) -> dict[str, float]:
    """Fine-tune the teacher classifier on a LABELLED_MESSAGES split (hard labels only).

    For the demo only: a production team passes its own fine-tuned classifier instead.
    """
    from mangadistill.core.models import resolve_model

    validated = read_valid(labelled_uri, LABELLED_MESSAGES, "quarantine", None)
    table = validated.table
    result = train_classifier(
        resolve_model(base_model), table.column("text").to_pylist(), table.column("label").to_pylist(),
        INTENTS, output_dir, config,
    )
    Path(output_dir, "teacher_card.json").write_text(json.dumps({
        "role": "intent teacher classifier (demo bootstrap)", "base_model": base_model,
        "labelled_uri": labelled_uri, "train_rows": table.num_rows, **quarantine_metrics(validated),
    }, indent=2))
    return {"train_rows": float(table.num_rows), "final_loss": result.epoch_losses[-1],
            "train_seconds": result.train_seconds}


def run_quantization(model_dir: str, output_dir: str, eval_uri: str, max_length: int = 64) -> dict[str, float]:
    """A classifier folder -> its int8 ONNX folder; size, latency and accuracy before and after (the eval labels
    checked against the classifier's id2label)."""
    from mangadistill.intent.quantization import quantize_classifier

    labels = load_label_set(TEACHER_ID2LABEL, model_dir)
    table = read_intent_table(eval_uri, LABELLED_MESSAGES, labels=labels)[0].table
    report = quantize_classifier(model_dir, output_dir, table.column("text").to_pylist(),
                                 table.column("label").to_pylist(), max_length=max_length)
    return loggable(report)


def run_intent_gate_check(
    generated: EvalSetUris, handwritten: EvalSetUris, student_dir: str, baseline_dir: str, int8_dir: str,
    teacher_model: str, report_uri: str, event_uri: str, gates_uri: str = "",
    student_name: str = "intent-student", teacher_name: str = "intent-teacher-ensemble", event_copy_uri: str = "",
) -> IntentGateOutcome:
    """Evaluate on the generated eval split and the hand-written set, apply the gates (`intent.gate`), write the
    HTML report and the event (and a copy at event_copy_uri when given: the exit handler reads it); the teacher
    classifier runs only for latency and size."""
    from mangadistill.core.events import copy_event
    from mangadistill.core.models import resolve_model
    from mangadistill.intent.gate import run_intent_gate

    outcome = run_intent_gate(
        generated, handwritten, student_dir, baseline_dir, int8_dir, resolve_model(teacher_model),
        report_uri, event_uri, gates_uri=gates_uri, student_name=student_name, teacher_name=teacher_name,
    )
    copy_event(event_uri, event_copy_uri)
    return outcome


HANDWRITTEN_EVAL_FILE = "intent_eval_handwritten.jsonl"
"""The packaged hand-written set (resources/HANDWRITTEN.md): never used for training or for choosing defaults."""


def run_handwritten_eval(uri: str, output_uri: str, quarantine_uri: str, on_bad_rows: str = "quarantine",
                         labels_uri: str = "", teacher_model: str = "") -> dict[str, float]:
    """The packaged hand-written set (uri empty) or a user's LABELLED_MESSAGES file -> HANDWRITTEN_MESSAGES +
    QUARANTINE, its labels checked against the run's label set (`labels.load_label_set(labels_uri, teacher)`;
    teacher_model is read only for labels_uri "teacher"). A file without `also_plausible` gets an all-null one;
    an also_plausible equal to the label is cleared (a row is ambiguous only with a second, different intent)."""
    from mangadistill.core.models import resolve_model

    teacher_dir = resolve_model(teacher_model) if labels_uri == TEACHER_ID2LABEL else ""
    labels = load_label_set(labels_uri, teacher_dir)
    if uri:
        table = storage.read_table(uri)
        source = uri
    else:
        packaged = resources.files("mangadistill.resources").joinpath(HANDWRITTEN_EVAL_FILE)
        with resources.as_file(packaged) as local:
            table = storage.read_table(str(local))
        source = f"packaged {HANDWRITTEN_EVAL_FILE}"
    if "also_plausible" not in table.column_names:
        table = table.append_column("also_plausible", pa.nulls(table.num_rows, pa.string()))
    schema = intent_contract(HANDWRITTEN_MESSAGES, labels)
    validated = validate_table(table, schema, source, on_bad_rows=on_bad_rows)
    storage.write_table(validated.quarantine, quarantine_uri)
    row_labels = validated.table.column("label").to_pylist()
    second = validated.table.column("also_plausible").to_pylist()
    repeats = sum(alt == label for alt, label in zip(second, row_labels, strict=True))
    second = [None if alt == label else alt for alt, label in zip(second, row_labels, strict=True)]
    table = validated.table.set_column(validated.table.schema.get_field_index("also_plausible"),
                                       schema.field("also_plausible"), pa.array(second, pa.string()))
    storage.write_table(table, output_uri)
    return loggable({
        "rows": table.num_rows, "ambiguous_rows": sum(alt is not None for alt in second),
        "also_plausible_cleared": repeats, **{f"rows_{name}": row_labels.count(name) for name in labels.names},
        **quarantine_metrics(validated),
    })


INTENT_CARD = ModelCard(
    task="intent", pipeline_tag="text-classification",
    intended_use="Routing MangaAssist chat messages to one of the store's intents (the `id2label` of config.json) "
                 "on CPU. The report shows how well its probabilities are calibrated (ECE, reliability diagram, "
                 "the ambiguous hand-written messages): send low-confidence messages to a person.",
    how_to_load="```python\nfrom transformers import pipeline\nclassify = pipeline(\"text-classification\", "
                "model=\"VERSION_FOLDER\")\n\nimport onnxruntime  # the int8 CPU variant\nsession = "
                "onnxruntime.InferenceSession(\"VERSION_FOLDER/onnx/model_qint8_dynamic.onnx\")\n```",
    limitations="Trained on the store's own messages as labelled by its teacher ensemble; messages in other "
                "languages or about other shops were not evaluated.",
)


def run_intent_publish(student_dir: str, int8_dir: str, report_path: str, event_path: str, models_root: str,
                       model_name: str, run_id: str) -> PublishedVersion:
    """The promoted intent student as `<models_root>/<model_name>/<run_id>/` (`core.publish.publish_version`):
    the transformers folder at the top, the int8 ONNX model as onnx/model_qint8_dynamic.onnx."""
    return publish_version(models_root, model_name, run_id, encoder_layout(student_dir, int8_dir), event_path,
                           report_path, INTENT_CARD)
