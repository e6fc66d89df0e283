"""Starting and ending MLflow runs: a stage's run, its experiment, its end state and where to find it.

What goes into the active run is ``dlfm.tracking.run_logs``; which store it goes to, ``dlfm.tracking.store``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from typing import Iterator

from dlfm.constants import DEFAULT_EXPERIMENT  # noqa: F401 - re-exported by dlfm.tracking
from dlfm.errors import DlfmError
from dlfm.redact import redact, redact_uri, scrub
from dlfm.tracking.store import check_store_writable, configure_tracking, unexpected_store_note

ERROR_TAG = "dlfm.error"
RESUME_HINT_TAG = "dlfm.resume_hint"
EARLIER_ERROR_TAG = "dlfm.earlier_error"  # a resumed run that finished keeps why its earlier attempt stopped here


def _mlflow():
    import mlflow

    return mlflow


def time_tag(seconds: float | None = None) -> str:
    """A readable UTC time for tags (``2025-05-01 14:03:07 UTC``), not an epoch float."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() if seconds is None else seconds))


def parse_time_tag(text: str) -> float | None:
    """Epoch seconds of a ``time_tag`` (or of an older run's epoch-float tag); None when unreadable."""
    import calendar

    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S UTC")))
    except ValueError:
        return None


def hardware_description() -> str:
    """The machine in a few words, for the ``dlfm.hardware`` tag: cores and CPU model, and the GPUs NVML sees.

    NVML (not torch.cuda) names the GPUs, so tagging never creates a CUDA context in a process that forks later.
    """
    import platform

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        models = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = models[0] if models else cpu
    gpus: list[str] = []
    with contextlib.suppress(Exception):  # no NVIDIA driver or no nvidia-ml-py: a CPU-only machine
        import pynvml

        pynvml.nvmlInit()
        try:
            gpus = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    names = [g.decode() if isinstance(g, bytes) else str(g) for g in gpus]
    shown = ", ".join(f"{names.count(n)}× {n}" for n in dict.fromkeys(names))
    return f"{cores}-core {cpu}" + (f", {shown}" if shown else "")


EXPERIMENT_DESCRIPTION = (
    "dlfm: a foundation encoder of simulated DeepLense strong-lensing images (lenstronomy, model_ii: no_sub / cdm / "
    "axion substructure). Runs are named <stage>-<what>; filter by tags.`dlfm.stage` (simulate, autoencoder, mae, "
    "supervised, multitask, tune, evaluate, transfer, main). val/… and test/… are the best weights' values "
    "(one per run, compare them), val_epoch/… and train/… the per-epoch curves. Encoders are registered as dlfm-encoder."
)


def resolve_experiment_name(configured: str = "") -> str:
    """The experiment a run that dlfm starts goes to: ``experiment_name`` if given, else
    ``MLFLOW_EXPERIMENT_NAME`` (MLflow's own habit), else ``deeplense-fm``."""
    return configured or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def describe_experiment(experiment_id: str) -> None:
    """Give a dlfm experiment its description and tags, once (a description edited in the UI is kept)."""
    client = _mlflow().MlflowClient()
    experiment = client.get_experiment(experiment_id)
    if experiment.name == "Default":
        return
    if not experiment.tags.get("mlflow.note.content"):
        client.set_experiment_tag(experiment_id, "mlflow.note.content", EXPERIMENT_DESCRIPTION)
    if experiment.tags.get("project") != "dlfm":
        client.set_experiment_tag(experiment_id, "project", "dlfm")


def check_project_experiment(configured: str, experiment_id: str) -> str:
    """Under ``mlflow run`` the run's experiment is fixed already; the name, or one error when a param disagrees.

    ``mlflow run`` files the run under ``--experiment-name`` / ``MLFLOW_EXPERIMENT_NAME`` (else
    ``Default``) before dlfm starts, and a param cannot move it: so an ``experiment_name`` that names
    another experiment is refused rather than logged as a claim the run does not keep.
    """
    name = _mlflow().MlflowClient().get_experiment(experiment_id).name
    if configured and configured != name:
        raise DlfmError(f"experiment_name={configured!r}, but mlflow run filed this run under experiment {name!r}; "
                        f"pass --experiment-name {configured} to mlflow run (or export MLFLOW_EXPERIMENT_NAME={configured}) "
                        "instead of the param")
    if name == "Default":
        import sys

        print(f"dlfm: note: mlflow run filed this run under MLflow's 'Default' experiment; "
              f"export MLFLOW_EXPERIMENT_NAME={DEFAULT_EXPERIMENT} (or pass --experiment-name) to file runs together",
              file=sys.stderr, flush=True)
    return name


@contextlib.contextmanager
def ended_on_exit(finished_on: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """End the active run when the block exits: FINISHED on success (and on ``finished_on``),
    KILLED on Ctrl-C/SIGTERM, FAILED on anything else with the reason in ``dlfm.error``.

    The exception always propagates; the run never stays RUNNING.
    """
    mlflow = _mlflow()
    try:
        yield
    except finished_on:
        clear_failure_tags()
        mlflow.end_run("FINISHED")
        raise
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            mlflow.set_tag(ERROR_TAG, "interrupted (SIGINT/SIGTERM)")
        mlflow.end_run("KILLED")
        raise
    except BaseException as error:  # noqa: BLE001 - any failure must end the run FAILED, then propagate
        message = scrub(str(error).splitlines()[0]) if str(error) else type(error).__name__
        with contextlib.suppress(Exception):
            mlflow.set_tag(ERROR_TAG, message[:5000])
        mlflow.end_run("FAILED")
        raise
    else:
        clear_failure_tags()
        mlflow.end_run("FINISHED")


def clear_failure_tags() -> None:
    """Before the active run ends FINISHED: drop the error and resume hint an earlier, interrupted attempt left.

    A resumed run reopens the KILLED/FAILED run, so without this it would finish carrying a
    ``dlfm.error`` that no longer holds. The old reason moves to ``dlfm.earlier_error``.
    """
    mlflow = _mlflow()
    run = mlflow.active_run()
    if run is None:
        return
    with contextlib.suppress(Exception):  # cosmetic: never turn a finished run into a failed one
        client = mlflow.MlflowClient()
        tags = client.get_run(run.info.run_id).data.tags
        if ERROR_TAG in tags:
            client.set_tag(run.info.run_id, EARLIER_ERROR_TAG, tags[ERROR_TAG])
        for key in (ERROR_TAG, RESUME_HINT_TAG):
            if key in tags:
                client.delete_tag(run.info.run_id, key)


@contextlib.contextmanager
def stage_run(stage: str, run_name: str, experiment_name: str = "", tags: dict | None = None,
              nested: bool = False, system_metrics: bool = True, run_id: str | None = None,
              description: str = "") -> Iterator[str]:
    """Start (or continue, under ``mlflow run``) the run of one stage; yield its id.

    A run dlfm starts goes to ``resolve_experiment_name(experiment_name)``; under ``mlflow run`` the
    run is already filed, and an ``experiment_name`` naming another experiment is refused.
    ``description`` becomes the run's description (``mlflow.note.content``); ``describe_run`` adds the result.
    The run ends FINISHED on success, KILLED on Ctrl-C/SIGTERM and FAILED on any exception,
    with the reason in the ``dlfm.error`` tag; it never stays RUNNING.
    """
    mlflow = _mlflow()
    configure_tracking()
    launched_by_project = "MLFLOW_RUN_ID" in os.environ and not nested and run_id is None
    run_tags = {"dlfm.stage": stage, "dlfm.pid": str(os.getpid()), "dlfm.host": socket.gethostname(),
                "dlfm.started_at": time_tag(), "dlfm.hardware": hardware_description(),
                **({"mlflow.note.content": redact(description)} if description else {}),
                **{k: redact(str(v)) for k, v in (tags or {}).items()}}  # REST stores need string tag values
    check_store_writable(mlflow.get_tracking_uri())
    if launched_by_project:  # before anything is logged: a refusal leaves the run FAILED with the reason
        note = unexpected_store_note(mlflow.get_tracking_uri())
        if note:
            print(note, file=sys.stderr, flush=True)
        project_run = mlflow.MlflowClient().get_run(os.environ["MLFLOW_RUN_ID"])
        check_project_experiment(experiment_name, project_run.info.experiment_id)
    try:
        if not launched_by_project and run_id is None and not nested:
            mlflow.set_experiment(resolve_experiment_name(experiment_name))
        if nested:
            parent = mlflow.active_run()
            experiment_id = parent.info.experiment_id if parent else None
            run = mlflow.start_run(run_name=run_name, nested=True, tags=run_tags, experiment_id=experiment_id)
        else:
            run = mlflow.start_run(run_id=run_id, run_name=None if (launched_by_project or run_id) else run_name,
                                   tags=run_tags, log_system_metrics=system_metrics or None)
            if launched_by_project:
                mlflow.set_tag("mlflow.runName", run_name)
        if not nested:
            describe_experiment(run.info.experiment_id)
    except Exception as error:  # noqa: BLE001 - a store we cannot write (read-only, down, locked) is a user error
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if mlflow.active_run() is not None:
            with contextlib.suppress(Exception):
                mlflow.end_run("FAILED")
        raise DlfmError(f"cannot start a run in the tracking store {redact_uri(mlflow.get_tracking_uri())}: "
                        f"{scrub(reason, mlflow.get_tracking_uri())[:300]}") from None
    with ended_on_exit():
        yield run.info.run_id


def fail_pending_run(message: str, status: str = "FAILED") -> None:
    """Mark the run that ``mlflow run`` created (MLFLOW_RUN_ID) FAILED when we fail before starting it.

    A run that already ended (the stage ended it, or a resume superseded it) is left as it is.
    """
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    with contextlib.suppress(Exception):
        configure_tracking()
        client = _mlflow().MlflowClient()
        if client.get_run(run_id).info.status != "RUNNING":
            return
        client.set_tag(run_id, ERROR_TAG, scrub(message)[:5000])
        client.set_terminated(run_id, status)


def describe_run(text: str) -> None:
    """Set the active run's description (``mlflow.note.content``: the UI's Description box)."""
    _mlflow().set_tag("mlflow.note.content", redact(text))


# MLflow 3's UI opens in its GenAI view (traces and evaluations: no runs table, no Models link) unless the browser
# has chosen "Model training"; a link carrying this query opens the run in the model-training view.
UI_MODEL_TRAINING_VIEW = "?workflowType=machine_learning"
UI_LOCAL_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` listens by default


def run_location(run_id: str) -> dict[str, str]:
    """Where a run is: its experiment's name and id, and its UI link (with the ``mlflow ui`` command for a local store)."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    uri = mlflow.get_tracking_uri()
    page = f"/#/experiments/{experiment.experiment_id}/runs/{run_id}{UI_MODEL_TRAINING_VIEW}"
    if uri.startswith(("http://", "https://")):
        where = f"{redact_uri(uri).rstrip('/')}{page}"
    else:
        where = f"mlflow ui --backend-store-uri {redact_uri(uri)}, then open {UI_LOCAL_ADDRESS}{page}"
    return {"experiment": experiment.name, "experiment_id": experiment.experiment_id, "view": where}


def stage_summary(stage: str, run_id: str, headline: dict[str, float] | None = None, version: str | None = None) -> str:
    """The lines a stage prints when it ends: experiment, run id, headline metrics, registered version, where to look."""
    where = run_location(run_id)
    lines = [f"[{stage}] finished run {run_id} in experiment {where['experiment']!r} (id {where['experiment_id']})"]
    if headline:
        lines.append(f"[{stage}] " + ", ".join(f"{k} {v:.4f}" for k, v in headline.items()))
    if version:
        lines.append(f"[{stage}] registered dlfm-encoder version {version} (alias candidate; "
                     f"models:/dlfm-encoder/{version})")
    lines.append(f"[{stage}] view: {where['view']}")
    return "\n".join(lines)


def pending_resume_hint() -> str:
    """The resume hint tagged on the run this process worked in ("" if none): for a stop signal that
    landed outside the stage's own handler, so the printed line can still say how to resume."""
    with contextlib.suppress(Exception):
        run_id = active_run_id() or os.environ.get("MLFLOW_RUN_ID")
        if run_id:
            return _mlflow().MlflowClient().get_run(run_id).data.tags.get(RESUME_HINT_TAG, "")
    return ""


def active_run_id() -> str | None:
    """Id of the active run, if any."""
    run = _mlflow().active_run()
    return run.info.run_id if run else None

