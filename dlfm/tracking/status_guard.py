"""Keep a KILLED run KILLED after ``mlflow run``'s launcher has had its say; purge a run that holds a secret.

When the entry point exits non-zero, MLflow 3.17's launcher marks the run FAILED "unless it is
already terminated", but its check compares the status string with integer codes
(``RunStatus.is_terminated(get_run(...).info.status)``), so it overwrites every status, KILLED
included. An interrupted entry point therefore starts this guard, detached: it waits for the
launcher to exit, then puts back the status the entry point set (only if the launcher changed it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

WAIT_FOR_LAUNCHER_S = 120.0  # the launcher marks the run right after our exit; it is gone long before this (s)


def guard_final_status(run_id: str | None) -> None:
    """Under ``mlflow run``: if ``run_id`` (the launcher's MLFLOW_RUN_ID, read at start: ending the run unsets it)
    ended KILLED, start the detached guard that keeps it so after the launcher exits."""
    launcher = os.getppid()
    if not run_id or launcher == 1:  # not under mlflow run, or the launcher is already gone
        return
    from mlflow import MlflowClient

    status = MlflowClient().get_run(run_id).info.status
    if status != "KILLED":
        return
    subprocess.Popen([sys.executable, "-m", "dlfm.tracking.status_guard", run_id, str(launcher), status],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (an exited process not yet reaped by its parent counts as gone)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except ProcessLookupError:
        return False
    except OSError:  # no /proc (not Linux): kill(0) succeeded, so it runs
        return True


def restore_after(run_id: str, launcher_pid: int, status: str) -> None:
    """Wait until ``launcher_pid`` has exited; if it left the run FAILED, set ``status`` back."""
    from mlflow import MlflowClient  # imported while the launcher finishes: it takes seconds

    client = MlflowClient()
    deadline = time.monotonic() + WAIT_FOR_LAUNCHER_S
    while time.monotonic() < deadline and alive(launcher_pid):
        time.sleep(0.2)
    if client.get_run(run_id).info.status == "FAILED":
        client.set_terminated(run_id, status)


def purge_launcher_run() -> str:
    """Under ``mlflow run``: delete the launcher's run for good once the launcher exits (its params hold a secret).

    The launcher sets the run's status after we exit, which fails on a deleted run, so a detached
    process waits for it, then deletes the run and, on a database store, runs MLflow's own garbage
    collection (``mlflow gc --run-ids``, in-process: the store URI never reaches a command line).
    Returns the sentence the refusal adds (empty when not under ``mlflow run``).
    """
    from dlfm.tracking.store import resolve_tracking_uri

    run_id, launcher = os.environ.get("MLFLOW_RUN_ID"), os.getppid()
    if not run_id or launcher == 1:
        return ""
    subprocess.Popen([sys.executable, "-m", "dlfm.tracking.status_guard", run_id, str(launcher), PURGE],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if resolve_tracking_uri().startswith(("http://", "https://")):  # gc needs the server's database: the admin's job
        return (f"; mlflow run stored it as a param of run {run_id}: dlfm deletes that run when mlflow run exits, "
                f"but only the server's admin can purge it: ask them to run `mlflow gc --backend-store-uri "
                f"<the server's database> --run-ids {run_id}`")
    return (f"; mlflow run stored it as a param of run {run_id}: dlfm deletes that run permanently "
            f"(mlflow gc --run-ids {run_id}) as soon as mlflow run exits")


PURGE = "purge"  # the guard's mode that deletes the run instead of restoring its status


def purge_after(run_id: str, launcher_pid: int) -> None:
    """Wait until ``launcher_pid`` has exited; delete ``run_id``, then garbage-collect it where the store allows."""
    from mlflow import MlflowClient
    from mlflow.cli import gc

    from dlfm.tracking.store import resolve_tracking_uri

    deadline = time.monotonic() + WAIT_FOR_LAUNCHER_S
    while time.monotonic() < deadline and alive(launcher_pid):
        time.sleep(0.2)
    uri = resolve_tracking_uri()
    MlflowClient(uri).delete_run(run_id)
    if not uri.startswith(("http://", "https://")):
        gc.main(["--backend-store-uri", uri, "--run-ids", run_id], standalone_mode=False)


if __name__ == "__main__":
    if sys.argv[3] == PURGE:
        purge_after(sys.argv[1], int(sys.argv[2]))
    else:
        restore_after(sys.argv[1], int(sys.argv[2]), sys.argv[3])
