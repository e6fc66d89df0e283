"""Starting and ending MLflow runs, and logging into the active one."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator

from dlfm.constants import DEFAULT_EXPERIMENT  # noqa: F401 - re-exported by dlfm.tracking
from dlfm.errors import DlfmError
from dlfm.redact import redact, redact_uri, scrub

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
ERROR_TAG = "dlfm.error"
RESUME_HINT_TAG = "dlfm.resume_hint"
EARLIER_ERROR_TAG = "dlfm.earlier_error"  # a resumed run that finished keeps why its earlier attempt stopped here
# MLflow's HTTP client defaults (7 retries, backoff factor 2, 120 s per request) make an unreachable
# server cost minutes before any error. These still ride out a server restart of a few seconds;
# `dlfm run` and the Makefile set them where the user has not, docs/development.md shows them (a test pins the copies).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",     # retries per request
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # waits 0, 2, 4 s between the retries (s)
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",        # per request (s)
}
NOT_PARAMS = ("experiment_name",)  # config fields that are not logged as params (see log_params)
_VERIFIED: set[tuple[str, str | None]] = set()  # (uri, user) already checked by this process


def configure_tracking() -> str:
    """Telemetry off; ``MLFLOW_TRACKING_URI`` wins, else the embedded SQLite store under mlruns/."""
    uri = resolve_tracking_uri()
    import mlflow

    mlflow.set_tracking_uri(uri)
    return uri


def resolve_tracking_uri() -> str:
    """The tracking URI (relative SQLite paths made absolute), a remote server checked; mlflow is not imported."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # Absolute, so nested project steps (run from the project root) share the same store.
        database = Path(uri[len("sqlite:///"):]).resolve()
        database.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{database}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
    check_tracking_server(uri)
    return uri


def unexpected_store_note(uri: str) -> str:
    """One line when ``mlflow run`` filed the run in MLflow's own default store, not the project's; else "".

    With ``MLFLOW_TRACKING_URI`` unset, MLflow 3 files runs in ``mlflow.db`` in the launcher's directory
    (``make venv``'s activate hook prevents it). Stores inside an ``mlruns/`` folder are dlfm's or chosen
    on purpose, and stay quiet.
    """
    if not uri.startswith("sqlite:///"):
        return ""
    database = Path(uri[len("sqlite:///"):].split("?")[0]).resolve()
    if database.name != "mlflow.db" or database.parent.name == "mlruns":
        return ""
    # Under `mlflow run` the launcher always exports MLFLOW_TRACKING_URI to this process, so whether the user set it
    # cannot be told from here: the note names both causes instead of claiming one.
    return (f"dlfm: note: this run is in {uri}, not the project's mlruns/mlflow.db (either the MLFLOW_TRACKING_URI you set, "
            f"or MLflow's default store, mlflow.db where `mlflow run` started, when none is set); see it with: "
            f"mlflow ui --backend-store-uri {uri}  (after `make venv`, `source .venv/bin/activate` selects the project's store)")


def check_store_writable(uri: str | None = None) -> None:
    """DlfmError when the SQLite store (or its folder, where SQLite puts its journal) cannot be written.

    Checked before a run starts: otherwise MLflow logs a long SQLAlchemy traceback before failing.
    ``os.access`` also sees read-only mounts and immutable files, which stop even root.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri[len("sqlite:///"):].split("?")[0])
    blocked = [str(p) for p in (database, database.parent) if p.exists() and not os.access(p, os.W_OK)]
    if blocked:
        raise DlfmError(f"the tracking store is read-only ({', '.join(blocked)} not writable); make mlruns/ writable "
                        "or point MLFLOW_TRACKING_URI at a writable store")


def check_tracking_server(uri: str | None = None, timeout: float = 10.0) -> None:
    """For an http(s) tracking URI: the server answers and accepts our credentials, else one DlfmError line.

    Without this, MLflow retries an unreachable server for minutes and then prints a long
    traceback; a 401 surfaces deep inside the first logging call. Checked once per process.
    """
    import requests

    uri = (uri or os.environ.get("MLFLOW_TRACKING_URI") or "").rstrip("/")
    if not uri.startswith(("http://", "https://")):
        return
    username = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token and not username else {}
    auth = (username, password or "") if username else None
    verify = not str(os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "")).lower() in ("true", "1")
    if (uri, username) in _VERIFIED:
        return
    url = f"{uri}/api/2.0/mlflow/experiments/search"
    try:
        response = requests.get(url, params={"max_results": 1}, auth=auth, headers=headers, timeout=timeout, verify=verify)
    except requests.exceptions.SSLError as error:
        raise DlfmError(f"tracking server {uri}: TLS failed ({type(error).__name__}); check the certificate or the URL scheme") from None
    except requests.exceptions.RequestException as error:
        kind = "timed out" if isinstance(error, requests.exceptions.Timeout) else "refused or unresolvable"
        raise DlfmError(f"cannot reach the MLflow tracking server {redact_uri(uri)}: it is unreachable (connection {kind}); "
                        "start it (dlfm server) or fix MLFLOW_TRACKING_URI") from None
    if response.status_code == 401:
        if not (username or token):
            raise DlfmError(f"tracking server {uri} requires a login; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        raise DlfmError(f"tracking server {uri} rejected the credentials of user {username!r} (401); "
                        "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    if response.status_code == 403:
        raise DlfmError(f"tracking server {uri} refused user {username!r} (403); ask the admin for a permission")
    if response.status_code >= 400:
        first = " ".join(response.text.split())[:200]
        raise DlfmError(f"tracking server {uri} answered {response.status_code} ({first}); is MLFLOW_TRACKING_URI an MLflow server?")
    _VERIFIED.add((uri, username))


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
                "dlfm.started_at": time_tag(),
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


def run_location(run_id: str) -> dict[str, str]:
    """Where a run is: its experiment's name and id, and a URL (tracking server) or the ``mlflow ui`` command."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        where = f"{redact_uri(uri).rstrip('/')}/#/experiments/{experiment.experiment_id}/runs/{run_id}"
    else:
        where = f"mlflow ui --backend-store-uri {redact_uri(uri)}  (then open experiment {experiment.name!r})"
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


def set_tags(tags: dict) -> None:
    """Set tags on the active run (values become strings)."""
    _mlflow().set_tags({k: redact(str(v)) for k, v in tags.items()})


def param_string(value) -> str:
    """A param as MLflow stores it; bools lowercase so they match the MLproject's "true"/"false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else redact(str(value))


def log_params(params: dict) -> None:
    """Log a config dict as params; keys that ``mlflow run`` already logged (as given) are kept."""
    mlflow = _mlflow()
    run = mlflow.active_run()
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data.params if run else {}
    # experiment_name is never a param: the run's experiment is its own attribute, and a param could disagree.
    mlflow.log_params({k: param_string(v) for k, v in params.items() if k not in logged and k not in NOT_PARAMS})


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log one step of metrics (one call per epoch keeps tracking off the hot path)."""
    _mlflow().log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


EPOCH_SPLIT = "val_epoch"  # per-epoch validation curves; `val/…` is the best weights' value, logged once


def epoch_metric_names(metrics: dict[str, float]) -> dict[str, float]:
    """One epoch's metrics under their curve names: ``val/x`` → ``val_epoch/x`` (``train/…``, ``train/lr`` included, unchanged).

    ``val/…`` and ``test/…`` are logged once, from the best epoch's weights (or the linear probe),
    so the UI draws them as one bar per run and the compare view lines up the encoder that was
    registered; the per-epoch validation values are a curve of their own, never a dot beside one.
    """
    return {(f"{EPOCH_SPLIT}/{k[4:]}" if k.startswith("val/") else k): v for k, v in metrics.items()}


def log_epoch_metrics(metrics: dict[str, float], epoch: int) -> None:
    """Log one epoch's metrics (train/…, train/lr, val_epoch/…) at step ``epoch``."""
    log_metrics(epoch_metric_names(metrics), step=epoch)


def log_final_metrics(metrics: dict[str, float], model_id: str | None = None) -> None:
    """Log the best weights' val/… and test/… once (step 0), linked to the logged model when ``model_id`` is given.

    Linked metrics make ``mlflow.search_logged_models(filter_string="metrics.`val/macro_auc` > 0.8")``
    and the Models tab rank encoders.
    """
    _mlflow().log_metrics({k: float(v) for k, v in metrics.items()}, step=0, model_id=model_id)


def log_figure(figure, artifact_file: str) -> None:
    """Log a matplotlib figure as a PNG artifact (e.g. figures/roc.png) and close it."""
    import matplotlib.pyplot as plt

    _mlflow().log_figure(figure, artifact_file)
    plt.close(figure)


def log_dict(data: dict, artifact_file: str) -> None:
    """Log a dict as a JSON/YAML artifact."""
    _mlflow().log_dict(_redacted(data), artifact_file)


def _redacted(value):
    """``value`` with every string in it (keys too) passed through the one redactor; numbers kept as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_redacted(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redacted(v) for v in value)
    return value


def log_text(text: str, artifact_file: str) -> None:
    """Log a text artifact (markdown reports, tables)."""
    _mlflow().log_text(redact(text), artifact_file)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a local file as an artifact."""
    _mlflow().log_artifact(str(path), artifact_path)


def log_artifacts(directory: str | Path, artifact_path: str | None = None) -> None:
    """Log a local directory's files as artifacts."""
    _mlflow().log_artifacts(str(directory), artifact_path)


def log_dataset(dataset, context: str = "training") -> None:
    """Record the dataset as a run input, with its digest and source path (or URI)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source_uri = redact(str(dataset.manifest.get("source_uri") or (dataset.root.resolve() if dataset.root else "memory")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(source_uri)
    name = dataset.manifest.get("name") or (dataset.root.name if dataset.root else "dataset")
    _mlflow().log_input(MetaDataset(source=source, name=name, digest=dataset.digest[:36]), context=context)


def log_encoder(encoder, image_size: int, objective: str, decoder=None, masking: dict | None = None) -> str:
    """Log the encoder (and its decoder, if any) as the artifact directory ``encoder/`` (format: dlfm.models.serialization)."""
    from dlfm.models.serialization import save_encoder

    with tempfile.TemporaryDirectory() as tmp:
        save_encoder(encoder, tmp, image_size=image_size, objective=objective, decoder=decoder, masking=masking)
        _mlflow().log_artifacts(tmp, "encoder")
    return "encoder"
