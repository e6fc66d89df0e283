"""MLflow runs for Optuna trials: child runs under an explicit parent, from any worker process.

A tune run's trials may run in worker processes (or on other machines) where the parent run
is not the active run, so children name their parent by id (``mlflow.start_run(parent_run_id=...)``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator

from dlfm.redact import redact
from dlfm.tracking.runs import ended_on_exit
from dlfm.tracking.store import configure_tracking


def _mlflow():
    import mlflow

    return mlflow


@contextlib.contextmanager
def trial_run(parent_run_id: str, run_name: str, tags: dict | None = None,
              finished_on: tuple[type[BaseException], ...] = ()) -> Iterator[str]:
    """A child run of ``parent_run_id``; yields its id.

    Ends FINISHED on success and on the exception types in ``finished_on`` (a pruned trial
    is a normal outcome), KILLED on Ctrl-C and FAILED on anything else, with the reason in
    the ``dlfm.error`` tag. The exception always propagates.
    """
    mlflow = _mlflow()
    configure_tracking()
    os.environ.pop("MLFLOW_RUN_ID", None)  # else start_run would resume the project run instead
    parent = mlflow.MlflowClient().get_run(parent_run_id)
    run_tags = {"dlfm.pid": str(os.getpid()), "dlfm.host": socket.gethostname(), **(tags or {})}
    run = mlflow.start_run(run_name=run_name, parent_run_id=parent_run_id, nested=True,
                           experiment_id=parent.info.experiment_id, tags={k: str(v) for k, v in run_tags.items()},
                           log_system_metrics=False)
    with ended_on_exit(finished_on):
        yield run.info.run_id


def terminate_run(run_id: str, status: str, tags: dict | None = None) -> None:
    """End a run that another (dead) process left RUNNING, e.g. the child of a heartbeat-stale trial."""
    configure_tracking()
    client = _mlflow().MlflowClient()
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, redact(str(value)))
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status)


def download_run_artifacts(run_id: str, artifact_path: str, dst_path: str | Path) -> Path:
    """Download one artifact (file or directory) of a run into ``dst_path``; returns its local path."""
    configure_tracking()
    Path(dst_path).mkdir(parents=True, exist_ok=True)
    local = _mlflow().artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst_path))
    return Path(local)


