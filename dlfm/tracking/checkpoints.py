"""Per-epoch training checkpoints as run artifacts, and the checks before a run is resumed.

A checkpoint is written atomically to ``checkpoints/<run_id>/last.pt`` (temp file, then
``os.replace``) and logged as the run artifact ``checkpoints/last.pt``. A resume downloads it
from the run's artifacts, so it works from any machine that shares the tracking server.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dlfm.errors import ConfigError, DlfmError
from dlfm.tracking.runs import RESUME_HINT_TAG  # noqa: F401 - RESUME_HINT_TAG is read from here too
from dlfm.tracking.store import configure_tracking

CHECKPOINT_DIR = "checkpoints"  # local copies: checkpoints/<run_id>/last.pt under the working directory
CHECKPOINT_ARTIFACT = "checkpoints/last.pt"
RESUMABLE_STATUSES = ("KILLED", "FAILED", "RUNNING")


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def resume_hint(stage: str, run_id: str) -> str:
    """The command that continues ``run_id`` (set as a tag on interrupted runs and printed)."""
    return f"mlflow run . -e {stage} --env-manager local -P resume={run_id}"


def local_checkpoint_path(run_id: str) -> Path:
    """Where this machine keeps the latest checkpoint of ``run_id``."""
    return Path(CHECKPOINT_DIR) / run_id / "last.pt"


def log_checkpoint(state: dict, run_id: str) -> Path:
    """Save ``state`` atomically to the local checkpoint file, then log it as ``checkpoints/last.pt``."""
    import mlflow
    import torch

    path = local_checkpoint_path(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".last-", suffix=".pt.tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)  # a crash leaves the previous last.pt whole, never a half-written one
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    mlflow.log_artifact(str(path), CHECKPOINT_DIR)
    return path


def load_checkpoint(run_id: str) -> dict | None:
    """The run's last checkpoint from its artifacts (weights-only load); None if it never finished an epoch."""
    import pickle

    import mlflow
    import torch
    from mlflow.exceptions import MlflowException

    configure_tracking()
    names = {item.path for item in _client().list_artifacts(run_id, CHECKPOINT_DIR)}
    if CHECKPOINT_ARTIFACT not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT, dst_path=tmp)
            return torch.load(local, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # torch's advice (weights_only=False) would run the file's code: refuse
            raise DlfmError(f"the checkpoint of run {run_id} is not a weights-only file (torch refused to unpickle it); "
                            "it may carry code, so dlfm will not load it; start a new run") from None
        except (MlflowException, OSError, RuntimeError, EOFError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DlfmError(f"the checkpoint of run {run_id} cannot be read ({reason}); start a new run") from None


def get_run(run_id: str):
    """The run ``run_id`` (a worker's view of the run that rank 0 checked)."""
    configure_tracking()
    return _client().get_run(run_id)


def check_resumable(run_id: str, stage: str):
    """The run to resume; ConfigError unless it exists, belongs to ``stage`` and did not finish."""
    from mlflow.exceptions import MlflowException

    configure_tracking()
    try:
        run = _client().get_run(run_id)
    except MlflowException:
        raise ConfigError(f"resume={run_id}: no such run in the tracking store {os.environ.get('MLFLOW_TRACKING_URI')}; "
                          "pass the id of a killed or failed run") from None
    run_stage = run.data.tags.get("dlfm.stage", "?")
    if run_stage != stage:
        raise ConfigError(f"resume={run_id}: that is a {run_stage} run, not a {stage} run; resume it with "
                          f"`mlflow run . -e {run_stage} -P resume={run_id}`" if run_stage != "?" else
                          f"resume={run_id}: that run was not made by a dlfm {stage} stage")
    if run.info.lifecycle_stage == "deleted":
        raise ConfigError(f"resume={run_id}: the run is deleted; restore it in the MLflow UI first")
    if run.info.status == "FINISHED":
        raise ConfigError(f"resume={run_id}: the run already FINISHED; nothing to resume (start a new run)")
    if run.info.status not in RESUMABLE_STATUSES:
        raise ConfigError(f"resume={run_id}: a {run.info.status} run cannot be resumed")
    if run.info.status == "RUNNING":
        from dlfm.tracking.maintenance import run_health

        health = run_health(run, stale_after=0.0)
        if health.verdict != "dead":  # two processes must never write one run
            raise ConfigError(f"resume={run_id}: the run is still RUNNING ({health.reason}); stop that process, "
                              "or if it died on another machine, mark it with `dlfm runs repair`")
    return run


def logged_epochs(run_id: str, objective: str) -> set[int]:
    """Steps (epochs) at which ``run_id`` logged its train total ``train/loss_<objective>``."""
    return {m.step for m in _client().get_metric_history(run_id, f"train/loss_{objective}")}


def backfill_epoch_metrics(run_id: str, history: list[dict[str, float]]) -> int:
    """Log epochs of a checkpoint's history whose step the run lacks (killed between checkpoint and metrics).

    The stage writes the checkpoint before the epoch's metrics, so a run never has a step its
    checkpoint lacks, and a resume never logs a step twice.
    """
    from dlfm.tracking.run_logs import log_epoch_metrics

    if not history:
        return 0
    total = next(k for k in history[0] if k.startswith("train/loss_"))  # train/loss_<objective>, logged every epoch
    logged = {m.step for m in _client().get_metric_history(run_id, total)}
    missing = [(epoch, metrics) for epoch, metrics in enumerate(history, start=1) if epoch not in logged]
    for epoch, metrics in missing:
        log_epoch_metrics(metrics, epoch)
    return len(missing)


def supersede_launcher_run(resumed_run_id: str) -> None:
    """``mlflow run -P resume=<id>`` creates a new, empty run first: end it FINISHED, pointing at the resumed run.

    It is not deleted: ``mlflow run`` sets its status again when the command exits, which fails
    on a deleted run. It carries no ``dlfm.stage`` tag, so dlfm's searches skip it.
    """
    launcher = os.environ.get("MLFLOW_RUN_ID")
    if not launcher or launcher == resumed_run_id:
        return
    client = _client()
    client.set_tag(launcher, "dlfm.resumed_run", resumed_run_id)
    client.set_tag(launcher, "mlflow.note.content",
                   f"Launcher of `-P resume={resumed_run_id}`: the training continued in run {resumed_run_id}.")
    client.set_terminated(launcher, "FINISHED")
