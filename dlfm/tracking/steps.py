"""Pipeline steps as nested MLflow Project runs, with reuse of finished identical steps."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from dlfm.errors import DlfmError
from dlfm.params import param_as_given

CODE_VERSION_TAG = "dlfm.code_version"


def code_version(root: Path) -> str:
    """sha256 over the project's code (dlfm/, pipelines/, MLproject): a step reruns when any of it changes."""
    digest = hashlib.sha256()
    files = sorted([*root.glob("dlfm/**/*.py"), *root.glob("pipelines/*.py"), root / "MLproject"])
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def find_finished_step(experiment_name: str, entry_point: str, params: dict[str, str], version: str):
    """A FINISHED run of this entry point with the same params (compared as MLflow's strings) and code version.

    ``mlflow run`` logs each -P value shell-quoted (evaluate's empty default finetune_budgets as ``''``): stored params
    are compared as the entry point received them.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.project.entryPoint` = '{entry_point}' and tags.`{CODE_VERSION_TAG}` = '{version}' "
                      "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=200,
    )
    wanted = {k: str(v) for k, v in params.items()}
    for run in runs:
        if all(k in run.data.params and param_as_given(run.data.params[k]) == v for k, v in wanted.items()):
            return run
    return None


def run_step(root: Path, entry_point: str, params: dict, experiment_name: str, version: str):
    """Run one entry point as a child of the active run (env_manager=local), or reuse a finished twin.

    Returns (run, reused).
    """
    import mlflow
    from mlflow import MlflowClient

    params = {k: str(v) for k, v in params.items()}
    existing = find_finished_step(experiment_name, entry_point, params, version)
    if existing is not None:
        return existing, True
    # MLflow launches the step as `mlflow run --run-id …` with MLFLOW_EXPERIMENT_ID set: an MLFLOW_EXPERIMENT_NAME
    # in this environment (an activated .venv exports one) would reach that command too, which then refuses both.
    with environment_without("MLFLOW_EXPERIMENT_NAME"):
        submitted = mlflow.projects.run(str(root), entry_point=entry_point, parameters=params, env_manager="local",
                                        experiment_name=experiment_name, synchronous=False)
    succeeded = submitted.wait()
    client = MlflowClient()
    run = client.get_run(submitted.run_id)
    if not succeeded:
        reason = run.data.tags.get("dlfm.error", "see the step's run in the MLflow UI")
        raise DlfmError(f"step {entry_point} failed (run {submitted.run_id}): {reason}")
    client.set_tag(submitted.run_id, CODE_VERSION_TAG, version)
    return client.get_run(submitted.run_id), False


@contextlib.contextmanager
def environment_without(name: str):
    """``os.environ`` without ``name`` inside the block (a child started there does not inherit it), as before after."""
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved
