"""The checked-in YAML is what `make compile` produces, and each component YAML is reusable on its own."""

import ast
import difflib
import re
from pathlib import Path

import pytest
import yaml
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
def test_component_yaml_loads_with_its_task_and_stage_name(folder):
    component = components.load_component_from_file(str(ROOT / "components" / folder / "component.yaml"))
    assert component.name == folder.replace("/", "-").replace("_", "-")
    assert component.component_spec.description, "the docstring becomes the component's documentation"


@pytest.mark.parametrize("folder", list(COMPONENTS))
def test_every_component_parameter_is_used_and_no_input_is_a_none_placeholder(folder):
    """A focused component has only its task's parameters: each one is read in the body, and an artifact input
    declared `= None` must be one the stage really treats as optional (the body branches on it)."""
    source = (ROOT / "components" / folder / "component.py").read_text()
    function = next(node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)
                    and node.name == folder.replace("/", "_"))
    used = {node.id for stmt in function.body for node in ast.walk(stmt) if isinstance(node, ast.Name)}
    parameters = [arg.arg for arg in function.args.args]
    assert not [name for name in parameters if name not in used], f"{folder}: unused parameters"
    defaults = dict(zip(parameters[len(parameters) - len(function.args.defaults):], function.args.defaults,
                        strict=True))
    none_inputs = [name for name, default in defaults.items()
                   if isinstance(default, ast.Constant) and default.value is None]
    for name in none_inputs:
        assert re.search(rf"\bif {name}\b|\b{name} if {name}\b|{name}\.path if {name}", source), (
            f"{folder}: input {name} defaults to None but the body never checks it")


def test_a_users_pipeline_reuses_one_compiled_component(tmp_path):
    component = components.load_component_from_file(
        str(ROOT / "components" / "intent" / "teacher_labeling" / "component.yaml"))

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
    assert "intent-teacher-labeling" in text and "count-rows" in text


@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_each_pipeline_runs_only_its_own_tasks_components(pipeline):
    spec = next(yaml.safe_load_all((ROOT / "pipelines" / f"{pipeline}.yaml").read_text()))
    task = pipeline.removesuffix("_distillation")
    executors = spec["deploymentSpec"]["executors"]
    images = {body["container"]["image"] for body in executors.values() if "container" in body}
    assert all("/mangadistill-" in image for image in images)
    stage_components = {name for name in spec["components"]  # the sub-DAGs of dsl.If, dsl.ParallelFor and
                        if not name.startswith(("comp-importer", "comp-condition-", "comp-exit-handler-",
                                                "comp-for-loop-"))}  # the exit handler
    assert "comp-core-run-event" in stage_components  # the exit task every pipeline shares
    stage_components.remove("comp-core-run-event")
    assert stage_components, pipeline
    assert all(name.startswith(f"comp-{task}-") for name in stage_components), sorted(stage_components)
    assert "task" not in spec["root"]["inputDefinitions"].get("parameters", {})
