"""A newcomer's plain `mlflow run` lands in the README's store: make venv's activate hook (dlfm/activate_hook.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from dlfm.activate_hook import install, project_store_uri, without_hook
from dlfm.constants import DEFAULT_EXPERIMENT



def readme_store() -> str:
    """The store of the README's `mlflow ui --backend-store-uri …` command (typed in the project root)."""
    stores = set(re.findall(r"^mlflow ui --backend-store-uri (\S+)", (REPO / "README.md").read_text(), re.M))
    assert len(stores) == 1, f"the README shows one UI store, not {stores}"
    return stores.pop()


def bash(script: str, cwd: Path, home: Path, timeout: int = 60) -> subprocess.CompletedProcess:
    """``script`` in bash under ``env -i`` with PATH and HOME only, as a fresh login would have."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home)}
    return subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "bash", "-c", script],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def fresh_venv(tmp_path) -> Path:
    """A real ``python -m venv`` (no pip: fast), whose activate script the hook edits."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return venv


def test_make_venv_installs_the_hook():
    recipe = (REPO / "Makefile").read_text().split("$(STAMP):")[1].split("\n\n")[0]
    assert "-m dlfm.activate_hook $(VENV) $(CURDIR)" in recipe


def test_activate_sets_the_project_store_only_when_unset_and_deactivate_restores(fresh_venv, tmp_path):
    project = tmp_path / "project"
    activate = install(fresh_venv, project)
    once = activate.read_text()
    assert install(fresh_venv, project).read_text() == once, "a second make venv must not add a second hook"
    shown = bash(f"source {activate}; echo \"$MLFLOW_TRACKING_URI\"; deactivate; echo \"${{MLFLOW_TRACKING_URI-unset}}\"",
                 cwd=tmp_path, home=tmp_path).stdout.split()
    assert shown == [project_store_uri(project), "unset"]
    assert project_store_uri(project) == f"sqlite:///{project.resolve()}/mlruns/mlflow.db"
    own = bash(f"export MLFLOW_TRACKING_URI=http://team:5000; source {activate}; echo $MLFLOW_TRACKING_URI; "
               f"deactivate; echo $MLFLOW_TRACKING_URI", cwd=tmp_path, home=tmp_path).stdout.split()
    assert own == ["http://team:5000", "http://team:5000"], "the shell's own setting wins and survives deactivate"
    twice = bash(f"source {activate}; source {activate}; echo $MLFLOW_TRACKING_URI", cwd=tmp_path, home=tmp_path)
    assert twice.stdout.split() == [project_store_uri(project)]


def test_activate_names_the_demo_experiment_only_when_the_shell_names_none(fresh_venv, tmp_path):
    activate = install(fresh_venv, tmp_path / "project")
    show = 'echo "${MLFLOW_EXPERIMENT_NAME-unset}"'
    plain = bash(f"source {activate}; {show}; deactivate; {show}", cwd=tmp_path, home=tmp_path).stdout.split()
    assert plain == [DEFAULT_EXPERIMENT, "unset"]
    own = bash(f"export MLFLOW_EXPERIMENT_NAME=mine; source {activate}; {show}; deactivate; {show}",
               cwd=tmp_path, home=tmp_path).stdout.split()
    assert own == ["mine", "mine"], "the shell's own experiment wins and survives deactivate"
    by_id = bash(f"export MLFLOW_EXPERIMENT_ID=7; source {activate}; {show}", cwd=tmp_path, home=tmp_path).stdout.split()
    assert by_id == ["unset"], "an experiment id of the shell's own must not be contradicted by a name"


def newcomer_project(tmp_path: Path, hooked: bool) -> tuple[Path, Path]:
    """A copy of the project (its own empty mlruns/) and a copy of this venv's activate, hooked or not.

    The copied activate still points at this test's venv (its VIRTUAL_ENV is absolute). The installed
    dlfm may be another checkout's (a shared editable install), so PYTHONPATH puts this checkout first.
    """
    if sys.prefix == sys.base_prefix:
        pytest.skip("needs to run from a venv (make venv), whose activate script the newcomer sources")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("MLproject", "conda.yaml"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "pipelines", project / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "mlruns").mkdir()
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    activate = venv / "bin" / "activate"
    # the copy starts unhooked whatever this venv's own activate holds (a fresh `make venv` hooks it)
    activate.write_text(without_hook((Path(sys.prefix) / "bin" / "activate").read_text()))
    with activate.open("a") as script:
        script.write(f"\nexport PYTHONPATH={REPO}\n")
    if hooked:
        install(venv, project)
    return project, activate


def newcomer_runs(project: Path, activate: Path, home: Path) -> subprocess.CompletedProcess:
    """The README's sequence: activate, then a plain `mlflow run` of the cheapest entry point."""
    return bash(f"source {activate} && mlflow run . -e simulate --env-manager local "
                "-P n_train=3 -P n_val=3 -P n_test=3 -P workers=1", cwd=project, home=home, timeout=600)


def finished_simulate_runs(uri: str, experiment: str | None = None) -> list:
    """FINISHED simulate runs in the store at ``uri`` (in ``experiment`` only, when given)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments() if experiment in (None, e.name)]
    return [r for r in client.search_runs(ids) if r.data.tags.get("dlfm.stage") == "simulate" and r.info.status == "FINISHED"] if ids else []


@pytest.mark.slow  # a real `mlflow run` in a clean shell
def test_newcomer_mlflow_run_lands_in_the_readme_store(tmp_path, monkeypatch):
    project, activate = newcomer_project(tmp_path, hooked=True)
    result = newcomer_runs(project, activate, home=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    monkeypatch.chdir(project)  # the README's command is typed in the project root
    assert len(finished_simulate_runs(readme_store(), experiment=DEFAULT_EXPERIMENT)) == 1, "filed beside make demo's runs"
    assert not (project / "mlflow.db").exists(), "MLflow's own default store must stay unused"
    assert "MLflow's default store" not in result.stderr
    assert "'Default' experiment" not in result.stderr


@pytest.mark.slow  # a real `mlflow run` in a clean shell
def test_a_run_in_mlflows_default_store_says_where_it_went(tmp_path):
    project, activate = newcomer_project(tmp_path, hooked=False)  # a venv made before the hook existed
    result = newcomer_runs(project, activate, home=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    notes = [line for line in result.stderr.splitlines() if line.startswith("dlfm: note:") and "MLflow's default store" in line]
    assert len(notes) == 1, result.stderr[-3000:]
    shown = notes[0].split("mlflow ui --backend-store-uri ")[1].split()[0]
    assert len(finished_simulate_runs(shown)) == 1, f"the note names {shown}, which does not hold the run"
