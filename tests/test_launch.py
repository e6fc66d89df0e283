"""`dlfm run`: the argv it hands to `mlflow run`, and the HTTP defaults pinned in the Makefile and README.

The one-line refusals through `dlfm run` (unreachable server, read-only store) and SIGTERM under
`mlflow run` are cases of tests/test_bad_inputs.py.
"""

from __future__ import annotations

import sys

from conftest import REPO

from dlfm.launch import mlflow_run_argv
from dlfm.tracking.runs import HTTP_DEFAULTS


def test_env_manager_local_is_added_unless_given():
    assert mlflow_run_argv([".", "-e", "tune"]) == [sys.executable, "-m", "mlflow", "run", ".", "-e", "tune",
                                                    "--env-manager", "local"]
    assert mlflow_run_argv([".", "--env-manager", "conda"])[-2:] == ["--env-manager", "conda"]


def test_http_defaults_are_the_same_in_makefile_and_readme():
    makefile, readme = (REPO / "Makefile").read_text(), (REPO / "README.md").read_text()
    for name, value in HTTP_DEFAULTS.items():
        assert f"export {name} ?= {value}" in makefile, name
        assert f"export {name}={value}" in readme, name
