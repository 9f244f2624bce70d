"""The checked-in YAML is what `make compile` produces, and each component YAML is reusable on its own."""

import difflib
from pathlib import Path

import pytest
from kfp import compiler, components, dsl

from mangadistill_pipelines.compile import COMPONENTS, PIPELINES, compile_all

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    for folder in COMPONENTS:
        (out / "components" / folder).mkdir(parents=True)
    (out / "pipelines").mkdir()
    compile_all(out)
    return out


@pytest.mark.parametrize(
    "relative",
    [f"components/{folder}/{name}" for folder in COMPONENTS for name in ("component.yaml", "README.md")]
    + [f"pipelines/{n}.yaml" for n in PIPELINES],
)
def test_checked_in_yaml_is_not_stale(fresh, relative, monkeypatch):
    checked_in = ROOT / relative
    assert checked_in.exists(), f"{relative} is missing: run `make compile` and commit it"
    expected = (fresh / relative).read_text()
    actual = checked_in.read_text()
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True)))[:40])
        pytest.fail(f"{relative} is stale: run `make compile` and commit it\n{diff}")


@pytest.mark.parametrize("folder", list(COMPONENTS))
def test_component_yaml_loads_and_composes_into_another_pipeline(folder, tmp_path):
    component = components.load_component_from_file(str(ROOT / "components" / folder / "component.yaml"))
    assert component.name.replace("-", "_") == folder
    assert component.component_spec.description, "the docstring becomes the component's documentation"

    if folder != "teacher_labeling":
        return
    # a user's own pipeline that reuses the compiled teacher-labeling component and feeds its own step
    @dsl.component(base_image="python:3.11")
    def count_rows(votes: dsl.Input[dsl.Dataset]) -> int:
        import pyarrow.parquet as pq

        return pq.read_table(votes.path).num_rows

    @dsl.pipeline(name="reuse-teacher-labeling")
    def reuse(messages_uri: str, teacher: str):
        messages = dsl.importer(artifact_uri=messages_uri, artifact_class=dsl.Dataset)
        votes = component(messages=messages.output, teacher_model=teacher, adjudicator="none")
        count_rows(votes=votes.outputs["member_votes"])

    out = tmp_path / "reuse.yaml"
    compiler.Compiler().compile(reuse, str(out))
    text = out.read_text()
    assert "teacher-labeling" in text and "count-rows" in text


def test_reranker_pipeline_runs_the_shared_components_as_its_task():
    import yaml

    def stage_tasks(name: str) -> dict:
        spec = next(yaml.safe_load_all((ROOT / "pipelines" / f"{name}.yaml").read_text()))
        return {task: body for task, body in spec["root"]["dag"]["tasks"].items() if not task.startswith("importer")}

    reranker = stage_tasks("reranker_distillation")
    assert set(reranker) == {"teacher-labeling", "distillation-training", "quantization", "gate-check"}
    for name, task in reranker.items():
        assert task["inputs"]["parameters"]["task"]["runtimeValue"]["constant"] == "reranker", name
    training = reranker["distillation-training"]["inputs"]["parameters"]
    assert {training[p]["componentInputParameter"] for p in ("alpha", "distill")} == {"alpha", "distill"}
    assert set(reranker["distillation-training"]["inputs"]["artifacts"]) == {"teacher_scores", "labelled_pairs"}
    # the intent pipeline still uses the components with their default task
    intent = stage_tasks("intent_distillation")
    assert all("task" not in task["inputs"].get("parameters", {}) for task in intent.values())
