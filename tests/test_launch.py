"""`dlfm run`: the argv it hands to `mlflow run`, and the HTTP defaults pinned in the Makefile and docs/development.md.

The one-line refusals through `dlfm run` (unreachable server, read-only store) and SIGTERM under
`mlflow run` are cases of tests/test_bad_inputs.py.
"""

from __future__ import annotations

import os
import sys

import pytest
from conftest import REPO, run_script

from dlfm.launch import mlflow_run_argv, path_with_this_python_first, runs_in_this_environment
from dlfm.tracking.store import HTTP_DEFAULTS


def test_env_manager_local_is_added_unless_given():
    assert mlflow_run_argv([".", "-e", "tune"]) == [sys.executable, "-m", "mlflow", "run", ".", "-e", "tune",
                                                    "--env-manager", "local"]
    assert mlflow_run_argv([".", "--env-manager", "conda"])[-2:] == ["--env-manager", "conda"]


def test_only_a_local_environment_gets_this_python_first_on_path():
    assert runs_in_this_environment(mlflow_run_argv([".", "-e", "tune"]))
    assert runs_in_this_environment(mlflow_run_argv([".", "--env-manager=local"]))
    assert not runs_in_this_environment(mlflow_run_argv([".", "--env-manager", "conda"]))
    assert not runs_in_this_environment(mlflow_run_argv([".", "--env-manager=virtualenv"]))
    here = os.path.dirname(os.path.abspath(sys.executable))
    path = path_with_this_python_first(os.pathsep.join(["/usr/bin", here, "/bin"]))
    assert path.split(os.pathsep) == [here, "/usr/bin", "/bin"]


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_dlfm_run_from_a_shell_without_the_venv_runs_the_entry_point_with_dlfms_python(tracking_uri, tmp_path):
    """`.venv/bin/dlfm run` without `source .venv/bin/activate`: the MLproject's `python` is still the venv's.

    Before, `mlflow run --env-manager local` started the PATH's python (here the system one, or none at all), and the
    run ended FAILED on `No module named 'dlfm'` (or torch).
    """
    import mlflow

    bare_path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                if p != os.path.dirname(os.path.abspath(sys.executable)) and ".venv" not in p)
    result = run_script(["-m", "dlfm.cli", "run", str(REPO), "-e", "simulate", "--experiment-name", "no-venv",
                         "-P", "n_train=6", "-P", "n_val=3", "-P", "n_test=3", "-P", f"out_dir={tmp_path / 'data'}",
                         "-P", "workers=1"], cwd=tmp_path, env_extra={"PATH": bare_path})
    assert result.returncode == 0, result.stderr[-2000:]
    runs = mlflow.search_runs(experiment_names=["no-venv"], output_format="list")
    assert [run.info.status for run in runs] == ["FINISHED"]


def test_http_defaults_are_the_same_in_makefile_and_docs():
    makefile, readme = (REPO / "Makefile").read_text(), (REPO / "docs/development.md").read_text()
    for name, value in HTTP_DEFAULTS.items():
        assert f"export {name} ?= {value}" in makefile, name
        assert f"export {name}={value}" in readme, name


def test_dlfm_run_help_exits_0_with_mlflow_runs_options(tmp_path):
    """`dlfm run --help` is help, not an error: what dlfm adds, then `mlflow run --help` (issue 30)."""
    for flag in ("--help",):
        result = run_script(["-m", "dlfm.cli", "run", flag], cwd=tmp_path, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith("usage: dlfm run") and "--entry-point" in result.stdout
        assert "dlfm: error" not in result.stdout + result.stderr


def test_dlfm_run_without_arguments_is_still_one_error_line(tmp_path):
    result = run_script(["-m", "dlfm.cli", "run"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().startswith("dlfm: error: usage: dlfm run")


def test_store_note_does_not_claim_the_tracking_uri_was_unset(tmp_path):
    """Under `mlflow run` the child always sees MLFLOW_TRACKING_URI, so the note names both causes, not one."""
    from dlfm.tracking.store import unexpected_store_note

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    note = unexpected_store_note(uri)
    assert "when MLFLOW_TRACKING_URI is unset, not" not in note
    assert "the MLFLOW_TRACKING_URI you set" in note and "MLflow's default store" in note
    assert f"mlflow ui --backend-store-uri {uri}" in note
    assert unexpected_store_note(f"sqlite:///{tmp_path}/mlruns/mlflow.db") == ""
