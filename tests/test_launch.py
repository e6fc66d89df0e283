"""`dlfm run`: the argv it hands to `mlflow run`, and the HTTP defaults pinned in the Makefile and docs/development.md.

The one-line refusals through `dlfm run` (unreachable server, read-only store) and SIGTERM under
`mlflow run` are cases of tests/test_bad_inputs.py.
"""

from __future__ import annotations

import sys

from conftest import REPO, run_script

from dlfm.launch import mlflow_run_argv
from dlfm.tracking.store import HTTP_DEFAULTS


def test_env_manager_local_is_added_unless_given():
    assert mlflow_run_argv([".", "-e", "tune"]) == [sys.executable, "-m", "mlflow", "run", ".", "-e", "tune",
                                                    "--env-manager", "local"]
    assert mlflow_run_argv([".", "--env-manager", "conda"])[-2:] == ["--env-manager", "conda"]


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
