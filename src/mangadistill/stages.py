"""One function per pipeline stage: read inputs by URI (local path or gs://), validate them against their
contract, do the work, write outputs and a quarantine table, and return the metrics the component logs.

Each KFP component in components/<stage>/ is a thin adapter that calls exactly one of these.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mangadistill import storage
from mangadistill.ensemble import EnsembleConfig, ensemble_soft_labels
from mangadistill.events import json_safe
from mangadistill.intents import INTENTS
from mangadistill.labeling import LabelingConfig, label_messages
from mangadistill.schemas import LABELLED_MESSAGES, MEMBER_VOTES, MESSAGES, SOFT_LABELS, validate_table
from mangadistill.training import TrainConfig, train_classifier

log = logging.getLogger(__name__)


def _read_valid(uri: str, schema, on_bad_rows: str, quarantine_uri: str | None):
    """Read and validate a table; write its quarantine (possibly empty) when a URI is given."""
    validated = validate_table(storage.read_table(uri), schema, source=uri, on_bad_rows=on_bad_rows)
    if quarantine_uri:
        storage.write_table(validated.quarantine, quarantine_uri)
    if validated.quarantine.num_rows:
        log.warning("%s: %d rows quarantined: %s", uri, validated.quarantine.num_rows, validated.reason_counts)
    return validated


def loggable(values: dict) -> dict[str, float]:
    """The finite numbers of a summary, as floats: what a KFP Metrics artifact can hold (no NaN, no None)."""
    return {name: float(value) for name, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)}


def _quarantine_metrics(validated) -> dict[str, float]:
    metrics = {"quarantined_rows": float(validated.quarantine.num_rows)}
    metrics.update({f"quarantined_{reason.replace(' ', '_')}": float(n)
                    for reason, n in validated.reason_counts.items()})
    return metrics


def run_teacher_labeling(
    messages_uri: str, votes_uri: str, quarantine_uri: str, config: LabelingConfig,
    on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """MESSAGES (extra columns ignored) -> MEMBER_VOTES + QUARANTINE."""
    validated = _read_valid(messages_uri, MESSAGES, on_bad_rows, quarantine_uri)
    votes, summary = label_messages(validated.table, config)
    storage.write_table(votes, votes_uri)
    return loggable({**summary, **_quarantine_metrics(validated)})


def run_soft_label_ensemble(
    votes_uri: str, soft_labels_uri: str, report_uri: str, quarantine_uri: str, config: EnsembleConfig,
    on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """MEMBER_VOTES -> SOFT_LABELS + a JSON report (agreement, entropy, examples) + QUARANTINE."""
    validated = _read_valid(votes_uri, MEMBER_VOTES, on_bad_rows, quarantine_uri)
    table, report = ensemble_soft_labels(validated.table, config)
    storage.write_table(table, soft_labels_uri)
    report = {"config": asdict(config), **report, **_quarantine_metrics(validated)}
    storage.write_text(report_uri, json.dumps(json_safe(report), indent=2, allow_nan=False))
    return loggable(report)


def run_distillation_training(
    soft_labels_uri: str, student_model: str, output_dir: str, config: TrainConfig,
    quarantine_uri: str = "", checkpoint_dir: str = "", on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """SOFT_LABELS -> a student classifier folder trained on β·CE(hard) + (1−β)·T²·KL(soft ‖ student)."""
    from mangadistill.models import resolve_model

    validated = _read_valid(soft_labels_uri, SOFT_LABELS, on_bad_rows, quarantine_uri)
    table = validated.table
    soft = np.asarray(table.column("soft_label").to_pylist(), dtype=np.float32)
    result = train_classifier(
        resolve_model(student_model), table.column("text").to_pylist(), table.column("hard_label").to_pylist(),
        INTENTS, output_dir, config, soft_labels=soft, checkpoint_dir=checkpoint_dir or None,
    )
    return loggable({
        "train_rows": table.num_rows, "final_loss": result.epoch_losses[-1], "train_seconds": result.train_seconds,
        "parameters": result.num_parameters, "resumed_from_epoch": result.resumed_from_epoch,
        **_quarantine_metrics(validated),
    })


def bootstrap_intent_teacher(
    labelled_uri: str, base_model: str, output_dir: str, config: TrainConfig | None = None,
) -> dict[str, float]:
    """Fine-tune the teacher classifier on a LABELLED_MESSAGES split (hard labels only).

    For the demo only: a production team passes its own fine-tuned classifier instead.
    """
    from mangadistill.models import resolve_model

    config = config or TrainConfig(beta=1.0, epochs=2, freeze_layers=8, learning_rate=1e-4, batch_size=16)
    validated = _read_valid(labelled_uri, LABELLED_MESSAGES, "quarantine", None)
    table = validated.table
    result = train_classifier(
        resolve_model(base_model), table.column("text").to_pylist(), table.column("label").to_pylist(),
        INTENTS, output_dir, config,
    )
    Path(output_dir, "teacher_card.json").write_text(json.dumps({
        "role": "intent teacher classifier (demo bootstrap)", "base_model": base_model,
        "labelled_uri": labelled_uri, "train_rows": table.num_rows, **_quarantine_metrics(validated),
    }, indent=2))
    return {"train_rows": float(table.num_rows), "final_loss": result.epoch_losses[-1],
            "train_seconds": result.train_seconds}


def run_quantization(model_dir: str, output_dir: str, eval_uri: str, max_length: int = 64) -> dict[str, float]:
    """A classifier folder -> its int8 ONNX folder; size, latency and accuracy before and after."""
    from mangadistill.quantization import quantize_classifier

    table = _read_valid(eval_uri, LABELLED_MESSAGES, "quarantine", None).table
    report = quantize_classifier(model_dir, output_dir, table.column("text").to_pylist(),
                                 table.column("label").to_pylist(), max_length=max_length)
    return loggable(report)


def run_intent_gate_check(
    eval_uri: str, eval_soft_labels_uri: str, eval_votes_uri: str, student_dir: str, baseline_dir: str, int8_dir: str,
    teacher_model: str, report_uri: str, event_uri: str, gates_uri: str = "",
    student_name: str = "intent-student", teacher_name: str = "intent-teacher-ensemble",
):
    """Evaluate on the human-labelled split, apply the gates, write the HTML report and the event."""
    from mangadistill.intent_gate import run_intent_gate
    from mangadistill.models import resolve_model

    return run_intent_gate(
        eval_uri, eval_soft_labels_uri, eval_votes_uri, student_dir, baseline_dir, int8_dir,
        resolve_model(teacher_model),
        report_uri, event_uri, gates_uri=gates_uri, student_name=student_name, teacher_name=teacher_name,
    )
