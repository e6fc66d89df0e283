"""A password given as an ``mlflow run -P`` value does not survive in the tracking store."""

from __future__ import annotations

import os
import time

import mlflow
import pytest
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from conftest import REPO, run_script

CANARY = "Zq9canaryPw"  # a password no other text contains


def all_runs(client) -> list:
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(experiments, run_view_type=ViewType.ALL, max_results=1000)


def test_dlfm_run_refuses_a_password_param_before_anything_is_stored(tracking_uri, tmp_path):
    done = run_script(["-m", "dlfm.cli", "run", str(REPO), "-e", "tune", "-P", f"storage=postgresql://ana:{CANARY}@127.0.0.1:1/optuna"],
                      cwd=tmp_path)
    assert done.returncode == 2 and CANARY not in done.stdout + done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("dlfm:") or "Traceback" in line] == [
        "dlfm: error: -P storage=postgresql://ana:***@127.0.0.1:1/optuna carries a password, which mlflow run would store "
        "as a param and print; export the URL in an environment variable and pass its name instead "
        "(tune: -P storage=env:OPTUNA_STORAGE), or drop the password and export PGPASSWORD"]
    assert all_runs(mlflow.MlflowClient()) == []


@pytest.mark.slow  # mlflow run starts two Python processes
def test_mlflow_run_with_a_password_param_is_refused_then_purged(tracking_uri, tmp_path):
    done = run_script(["-m", "mlflow", "run", str(REPO), "-e", "tune", "--env-manager", "local", "--experiment-name", "secret",
                       "-P", f"storage=postgresql://ana:{CANARY}@127.0.0.1:1/optuna"], cwd=tmp_path,
                      env_extra={"PATH": f"{REPO / '.venv' / 'bin'}:" + os.environ["PATH"]})
    assert done.returncode != 0
    [line] = [line for line in done.stderr.splitlines() if line.startswith("dlfm:")]
    assert line.startswith("dlfm: error: storage 'postgresql://ana:***@127.0.0.1:1/optuna' carries a password")
    assert "dlfm deletes that run permanently (mlflow gc --run-ids " in line and CANARY not in line
    run_id = line.rsplit("--run-ids ", 1)[1].split(")")[0]
    client = mlflow.MlflowClient()
    deadline = time.time() + 120
    while time.time() < deadline:  # the purge waits for the launcher to exit, then runs MLflow's gc
        try:
            client.get_run(run_id)
        except MlflowException:
            break
        time.sleep(0.5)
    with pytest.raises(MlflowException):
        client.get_run(run_id)
    assert not any(CANARY in str(r.data.params) for r in all_runs(client))
