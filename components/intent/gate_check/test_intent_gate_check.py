"""intent_gate_check alone under kfp.local: the gate's metrics, confusion matrix, report, event and decision."""

import json
from pathlib import Path
from typing import NamedTuple

from kfp import dsl, local

from mangadistill.core import storage
from mangadistill.intent.ensemble import EnsembleConfig
from mangadistill.intent.labeling import LabelingConfig
from mangadistill.intent.labels import INTENTS
from mangadistill.intent.stages import (
    run_handwritten_eval,
    run_quantization,
    run_soft_label_ensemble,
    run_teacher_labeling,
)
from mangadistill.sample_data.messages import build_sample_splits
from mangadistill_components.intent.gate_check import intent_gate_check


class Outputs(NamedTuple):
    metrics: dsl.Metrics
    confusion: dsl.ClassificationMetrics
    report: dsl.HTML
    event: dsl.Artifact
    promote: bool


def test_measures_the_student_on_human_labels_and_refuses_an_untrained_one(tmp_path, tiny_intent_classifier):
    teacher = str(tiny_intent_classifier)  # the same untrained tiny model plays every part
    paths = {name: str(tmp_path / name) for name in ("eval.parquet", "votes", "soft", "int8", "hw.parquet",
                                                     "hw-votes", "hw-soft")}
    storage.write_table(build_sample_splits(seed=5, n_labelled=10, n_production=10, n_eval=40)["eval"],
                        paths["eval.parquet"])
    run_handwritten_eval("", paths["hw.parquet"], str(tmp_path / "hw-q"))
    for messages, votes, soft in (("eval.parquet", "votes", "soft"), ("hw.parquet", "hw-votes", "hw-soft")):
        run_teacher_labeling(paths[messages], paths[votes], str(tmp_path / f"{votes}-q"),
                             LabelingConfig(teacher, adjudicator="none"))
        run_soft_label_ensemble(paths[votes], paths[soft], str(tmp_path / f"{soft}.json"),
                                str(tmp_path / f"{soft}-q"), EnsembleConfig())
    run_quantization(teacher, paths["int8"], paths["eval.parquet"])

    @dsl.pipeline(name="intent-gate-check-alone")
    def gate_alone(eval_uri: str, soft_uri: str, votes_uri: str, hw_uri: str, hw_soft_uri: str, hw_votes_uri: str,
                   model_uri: str, int8_uri: str, teacher: str) -> Outputs:
        def imported(uri, kind):
            return dsl.importer(artifact_uri=uri, artifact_class=kind).output

        task = intent_gate_check(
            eval_set=imported(eval_uri, dsl.Dataset), eval_soft_labels=imported(soft_uri, dsl.Dataset),
            eval_member_votes=imported(votes_uri, dsl.Dataset), handwritten_set=imported(hw_uri, dsl.Dataset),
            handwritten_soft_labels=imported(hw_soft_uri, dsl.Dataset),
            handwritten_member_votes=imported(hw_votes_uri, dsl.Dataset), student=imported(model_uri, dsl.Model),
            baseline=imported(model_uri, dsl.Model), quantized=imported(int8_uri, dsl.Model), teacher_model=teacher,
            student_name="tiny-student",
        )
        return Outputs(task.outputs["metrics"], task.outputs["confusion"], task.outputs["report"],
                       task.outputs["event"], task.outputs["promote"])

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    run = gate_alone(eval_uri=paths["eval.parquet"], soft_uri=paths["soft"], votes_uri=paths["votes"],
                     hw_uri=paths["hw.parquet"], hw_soft_uri=paths["hw-soft"], hw_votes_uri=paths["hw-votes"],
                     model_uri=teacher, int8_uri=paths["int8"], teacher=teacher)

    assert run.outputs["promote"] is False  # untrained tiny models fail the accuracy gates
    event = json.loads(Path(run.outputs["event"].path).read_text())
    assert event["event"] == "distilled_model_eval" and event["student"] == "tiny-student"
    assert event["promote"] is False
    assert set(event["gates"]) >= {"accuracy_retained", "handwritten_accuracy_retained", "int8_size_ratio"}
    metrics = run.outputs["metrics"].metadata
    assert metrics["eval_rows"] == 40 and metrics["student_accuracy"] == metrics["baseline_accuracy"]  # one model
    assert metrics["handwritten_rows"] == 104 and metrics["handwritten_ambiguous_rows"] == 27
    assert metrics["handwritten_student_accuracy"] == metrics["handwritten_baseline_accuracy"]
    assert metrics["student_latency_p50_ms"] > 0 and all(value == value for value in metrics.values())  # no NaN
    confusion = run.outputs["confusion"].metadata["confusionMatrix"]
    assert [c["displayName"] for c in confusion["annotationSpecs"]] == list(INTENTS)
    assert sum(map(sum, (row["row"] for row in confusion["rows"]))) == 40
    report = Path(run.outputs["report"].path).read_text()
    assert "DO NOT PROMOTE" in report and "Ambiguous messages (hand-written)" in report
