"""The shape of the code: `core` at the bottom, the three task wings side by side, no dispatch on a task name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mangadistill"
WINGS = ("intent", "reranker", "response")


def imported_packages(path: Path) -> set[str]:
    """The mangadistill sub-packages a module imports (`mangadistill.core.storage` -> "core")."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
        found |= {name.split(".")[1] for name in names if name.startswith("mangadistill.") and name.count(".")}
    return found


def modules(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def test_core_imports_no_wing_and_no_sample_data():
    for path in modules("core"):
        assert imported_packages(path) <= {"core", "resources"}, path


@pytest.mark.parametrize("wing", WINGS)
def test_a_wing_imports_only_core(wing):
    for path in modules(wing):
        others = imported_packages(path) - {wing, "core", "resources"}
        if path.name in ("stages.py",):  # a stage's demo default: the packaged sample catalog
            others -= {"sample_data"}
        assert not others, f"{path.relative_to(ROOT)} imports {sorted(others)}"


def test_no_code_dispatches_on_a_task_name():
    pattern = re.compile(r"\b(task|pipeline)\s*==\s*['\"](intent|reranker|response)['\"]")
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for folder in ("src", "components", "pipelines")
                 for path in sorted((ROOT / folder).rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders


def test_the_test_folders_mirror_the_wings():
    for package in ("core", *WINGS):
        assert (ROOT / "tests" / package).is_dir(), package


def test_every_package_folder_is_in_the_wheel():
    """pyproject lists packages one by one: a component or wing folder missing there is absent from a built wheel."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {folder: name for name, folder in config["package-dir"].items()}
    found = set()
    for folder, name in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *relative.parts]))
    assert sorted(found - set(config["packages"])) == []
