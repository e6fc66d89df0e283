"""Child runs as units of work: a FINISHED child run is the checkpoint of its cell.

MLflow's own ``search_runs`` with tag filters is the index of finished cells (no side file of our
own), so a resume, a worker process or a torchrun rank on another node finds them in any store
that the parent's own process can reach.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from dlfm.tracking.store import configure_tracking

PAGE = 1000  # runs per search_runs page


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def child_runs(parent_run_id: str, tags: dict[str, str] | None = None, status: str | None = "FINISHED") -> list:
    """Child runs of ``parent_run_id`` carrying every tag in ``tags`` (and ``status``), oldest first."""
    configure_tracking()
    client = _client()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    query = [f"tags.`mlflow.parentRunId` = '{parent_run_id}'"]
    query += [f"tags.`{key}` = '{value}'" for key, value in (tags or {}).items()]
    if status:
        query.append(f"attributes.status = '{status}'")
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], " and ".join(query), max_results=PAGE, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs += list(page)
        token = page.token
        if not token:
            return runs


def runs_with_tag(key: str, value: str) -> list:
    """Every RUNNING run (any experiment) tagged ``key = value``; e.g. the parent run a torchrun job's rank 0 opened."""
    from mlflow.entities import ViewType

    configure_tracking()
    client = _client()
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    return list(client.search_runs(experiments, f"tags.`{key}` = '{value}' and attributes.status = 'RUNNING'",
                                   max_results=PAGE)) if experiments else []


def wait_for_run_with_tag(key: str, value: str, timeout_s: float, poll_s: float = 1.0):
    """The first run tagged ``key = value``, polling until it appears; None after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = runs_with_tag(key, value)
        if found or time.monotonic() > deadline:
            return found[0] if found else None
        time.sleep(poll_s)


def get_run(run_id: str):
    """The run (params, tags, metrics, status) by id."""
    configure_tracking()
    return _client().get_run(run_id)


def log_array(array: np.ndarray, name: str) -> None:
    """Log ``array`` as the .npy artifact ``name`` of the active run."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="dlfm-array-") as tmp:
        path = Path(tmp) / name
        np.save(path, np.asarray(array), allow_pickle=False)
        mlflow.log_artifact(str(path))


def load_array(run_id: str, name: str) -> np.ndarray:
    """The .npy artifact ``name`` of ``run_id`` (never unpickled)."""
    import mlflow

    configure_tracking()
    with tempfile.TemporaryDirectory(prefix="dlfm-array-") as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=tmp)
        return np.load(local, allow_pickle=False)
