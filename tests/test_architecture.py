"""The rooms keep their doors: who may import what (every import, also function-local ones)."""

from __future__ import annotations

import ast

import pytest

from conftest import REPO

PACKAGE = REPO / "dlfm"
# Above dlfm/stages: the console entry (dlfm cli) and the MLproject generator may name stages.
ENTRY_MODULES = ("dlfm/cli.py", "dlfm/project_spec.py")


def imports_of(path) -> set[str]:
    """Every module a file imports, as dotted names (``from dlfm import tracking`` gives dlfm.tracking)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def package_files() -> list:
    return sorted(PACKAGE.rglob("*.py"))


def relative(path) -> str:
    return path.relative_to(REPO).as_posix()


def test_the_rules_see_every_file_and_real_imports():
    files = [relative(p) for p in package_files()]
    assert "dlfm/tracking/runs.py" in files and "dlfm/training/loop.py" in files
    assert any(name.startswith("mlflow") for name in imports_of(PACKAGE / "tracking" / "runs.py"))


@pytest.mark.parametrize("path", package_files(), ids=relative)
def test_only_tracking_imports_mlflow(path):
    if relative(path).startswith("dlfm/tracking/"):
        return
    offending = sorted(name for name in imports_of(path) if name == "mlflow" or name.startswith("mlflow."))
    assert not offending, f"{relative(path)} imports {offending}; log through dlfm.tracking instead"


@pytest.mark.parametrize("path", [p for p in package_files() if relative(p).startswith(("dlfm/models/", "dlfm/training/"))],
                         ids=relative)
def test_models_and_training_know_no_data_or_tracking(path):
    offending = sorted(name for name in imports_of(path) if name.startswith(("dlfm.data", "dlfm.tracking")))
    assert not offending, f"{relative(path)} imports {offending}; pass tensors and a log_fn in instead"


@pytest.mark.parametrize("path", package_files(), ids=relative)
def test_nothing_imports_upward_into_stages(path):
    if relative(path).startswith("dlfm/stages/") or relative(path) in ENTRY_MODULES:
        return
    offending = sorted(name for name in imports_of(path) if name.startswith("dlfm.stages"))
    assert not offending, f"{relative(path)} imports {offending}; move what it needs below dlfm/stages"
