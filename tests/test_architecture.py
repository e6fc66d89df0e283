"""The rooms keep their doors: who may import what (every import, also function-local ones)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


# --- The layers as import-linter contracts (pyproject.toml [tool.importlinter]) and no circles ---

def lint_imports(root) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root`` with root's pyproject.toml contracts (no cache: a fresh read)."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(("file", "planted", "broken"), [
    ("dlfm/models/heads.py", "import dlfm.stages.main  # planted back-import\n", "dlfm.models.heads -> dlfm.stages.main"),
    ("dlfm/data/layout.py", "import mlflow  # planted: only tracking may\n", "dlfm.data.layout -> mlflow"),
])
def test_a_planted_back_import_breaks_the_contracts(tmp_path, file, planted, broken):
    shutil.copytree(PACKAGE, tmp_path / "dlfm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / file
    target.write_text(target.read_text() + planted)
    result = lint_imports(tmp_path)
    assert result.returncode != 0 and broken in result.stdout, result.stdout + result.stderr


def strongly_connected(graph) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module: each is an import circle."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return circles


def test_no_import_circle_anywhere_in_the_package():
    import grimp

    assert strongly_connected(grimp.build_graph("dlfm")) == []
