"""The intent pipeline, and a user's pipeline reusing one compiled component, run end to end with kfp.local.

Tiny models built from configs keep this fast; the quality figures come from `make bench` with real models.
"""

import argparse
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
from kfp import compiler, components, dsl
from transformers import pipeline

from mangadistill.core import storage
from mangadistill.intent.labels import INTENTS
from mangadistill.sample_data.messages import build_sample_splits
from mangadistill_components.intent.teacher_labeling import intent_teacher_labeling
from mangadistill_pipelines.cli import EXIT_REJECTED, file_argument_folders, main
from mangadistill_pipelines.intent_distillation import DEMO, OUTPUTS
from mangadistill_pipelines.local import run_locally

TITLES = [
    {"title": "Nana", "authors": ["Ai Yazawa"], "genres": ["romance", "drama"], "volumes": 21},
    {"title": "Monster", "authors": ["Naoki Urasawa"], "genres": ["mystery", "thriller"], "volumes": 18},
    {"title": "Yotsuba&!", "authors": ["Kiyohiko Azuma"], "genres": ["comedy", "slice of life"], "volumes": 15},
]
SIZES = ["--n-labelled", "40", "--n-production", "120", "--n-eval", "60"]


@pytest.fixture(scope="module")
def production_log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "production_log.parquet"
    splits = build_sample_splits(seed=3, n_labelled=40, n_production=120, n_eval=60, titles=TITLES)
    storage.write_table(splits["production_log"], str(path))
    return path


def test_intent_demo_builds_its_data_and_teacher_when_missing(tmp_path, tiny_encoder):
    args = argparse.Namespace(workdir=tmp_path / "work", seed=3, teacher=None, base_model=str(tiny_encoder),
                              runner="subprocess", n_labelled=40, n_production=30, n_eval=20)
    prepared = DEMO.prepare(args, {"epochs": 1})

    teacher = tmp_path / "work" / "teachers" / "intent"
    assert json.loads((teacher / "teacher_card.json").read_text())["train_rows"] == 40
    assert prepared.arguments == {
        "production_log_uri": str((tmp_path / "work/data/intent_production_log.parquet").resolve()),
        "eval_uri": str((tmp_path / "work/data/intent_eval.parquet").resolve()),
        "teacher_model": str(teacher), "epochs": 1,
    }
    assert prepared.local_inputs == [str((tmp_path / "work/data").resolve())] and not prepared.extra_outputs
    assert storage.read_table(prepared.arguments["eval_uri"]).num_rows == 20

    own = tmp_path / "mine" / "handwritten.jsonl"  # a user's own hand-written set: its folder is mounted too
    own.parent.mkdir()
    own.write_text('{"message_id": "a", "text": "where is my order", "label": "order_tracking"}\n')
    with_own = DEMO.prepare(args, {"handwritten_eval_uri": str(own)})
    assert with_own.arguments["handwritten_eval_uri"] == str(own)
    assert str(own.parent.resolve()) in file_argument_folders(with_own.arguments)
    assert str((tmp_path / "work/data").resolve()) in file_argument_folders(with_own.arguments)


@pytest.mark.slow
def test_intent_pipeline_runs_end_to_end_through_the_cli(tiny_intent_classifier, tiny_encoder, tmp_path):
    workdir, out = tmp_path / "work", tmp_path / "out"
    code = main([
        "run", "intent", "--workdir", str(workdir), "--output-dir", str(out), "--teacher", str(tiny_intent_classifier),
        *SIZES, "--param", f"student_model={tiny_encoder}", "--param", "adjudicator=none", "--param", "epochs=1",
        "--fail-on-reject",
    ])
    assert code == EXIT_REJECTED  # tiny untrained models are not promoted, and --fail-on-reject says so
    for name in OUTPUTS.values():
        assert (out / name).exists(), name

    event = json.loads((out / OUTPUTS["event"]).read_text())
    assert event["event"] == "distilled_model_eval" and event["promote"] is False  # tiny untrained models
    assert set(event["gates"]) >= {"accuracy_retained", "handwritten_accuracy_retained", "latency_speedup_p50",
                                   "int8_size_ratio"}
    # the packaged hand-written set went through teacher labeling and the ensemble like the generated split
    assert event["eval_rows"] == 60 and event["handwritten_rows"] == 104 and event["handwritten_ambiguous_rows"] == 27
    for name in ("accuracy_retained", "macro_f1_retained", "teacher_ensemble_accuracy", "student_accuracy",
                 "baseline_accuracy", "student_int8_accuracy", "rare_recall_vs_baseline_min",
                 "ambiguous_student_top2_accuracy", "ambiguous_baseline_nll", "ambiguous_teacher_ensemble_ece"):
        assert f"handwritten_{name}" in event, name
    assert 0.0 <= event["handwritten_student_accuracy"] <= 1.0
    report = (out / OUTPUTS["report"]).read_text()
    assert "DO NOT PROMOTE" in report and "Quality on the hand-written set" in report

    classify = pipeline("text-classification", model=str(out / OUTPUTS["student"]), device="cpu")
    assert classify("where is my order?")[0]["label"] in INTENTS
    session = ort.InferenceSession(str(out / OUTPUTS["student_int8"] / "model.int8.onnx"))
    assert {i.name for i in session.get_inputs()} >= {"input_ids", "attention_mask"}


@pytest.mark.slow
def test_compiled_component_reused_in_another_pipeline_runs_locally(production_log, tiny_intent_classifier,
                                                                    tmp_path):
    compiled = tmp_path / "intent_teacher_labeling.yaml"
    compiler.Compiler().compile(intent_teacher_labeling, str(compiled))
    labeling = components.load_component_from_file(str(compiled))

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def share_of_rule_hits(votes: dsl.Input[dsl.Dataset]) -> float:
        import pyarrow.parquet as pq

        table = pq.read_table(votes.path)
        return sum(r is not None for r in table.column("rule_intent").to_pylist()) / table.num_rows

    @dsl.pipeline(name="reuse-teacher-labeling")
    def reuse(messages_uri: str, teacher: str) -> float:
        messages = dsl.importer(artifact_uri=messages_uri, artifact_class=dsl.Dataset)
        votes = labeling(messages=messages.output, teacher_model=teacher, adjudicator="none")
        return share_of_rule_hits(votes=votes.outputs["member_votes"]).output

    task = run_locally(reuse, {"messages_uri": str(production_log), "teacher": str(tiny_intent_classifier)},
                       str(tmp_path / "root"), enable_caching=False)
    rows = pq.read_table(production_log).num_rows
    assert 0.0 < task.output < 0.2, "escalation/account-security rules fire on a small share of a realistic log"
    assert np.isfinite(task.output) and rows == 120


@dsl.component(base_image="python:3.11")
def _decide(promote: bool, note: dsl.Output[dsl.Artifact]) -> NamedTuple("Decision", [("promote", bool)]):
    from collections import namedtuple

    with open(note.path, "w") as handle:
        handle.write("decided")
    return namedtuple("Decision", ["promote"])(promote)


@dsl.component(base_image="python:3.11")
def _act(note: dsl.Input[dsl.Artifact], acted: dsl.Output[dsl.Artifact]):
    with open(note.path) as source, open(acted.path, "w") as handle:
        handle.write(source.read())


@dsl.pipeline(name="named-output-condition")
def _named_output_condition(promote: bool, models_root: str):
    decision = _decide(promote=promote)
    with dsl.If(decision.outputs["promote"] == True, "promoted"), dsl.If(models_root != "", "root given"):  # noqa: E712
        _act(note=decision.outputs["note"])


@pytest.mark.parametrize(("promote", "models_root", "acted"), [(True, "m", True), (False, "m", False),
                                                               (True, "", False)])
def test_a_condition_on_a_named_task_output_runs_its_branch_locally(tmp_path, promote, models_root, acted):
    root = tmp_path / "root"
    run_locally(_named_output_condition, {"promote": promote, "models_root": models_root}, str(root))
    assert bool(list(root.rglob("acted"))) is acted
