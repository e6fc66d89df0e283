"""Starting and ending MLflow runs, and logging into the active one."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator

from dlfm.constants import DEFAULT_EXPERIMENT  # noqa: F401 - re-exported by dlfm.tracking
from dlfm.errors import DlfmError
from dlfm.redact import redact_uri, scrub

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
ERROR_TAG = "dlfm.error"
RESUME_HINT_TAG = "dlfm.resume_hint"
EARLIER_ERROR_TAG = "dlfm.earlier_error"  # a resumed run that finished keeps why its earlier attempt stopped here
# MLflow's HTTP client defaults (7 retries, backoff factor 2, 120 s per request) make an unreachable
# server cost minutes before any error. These still ride out a server restart of a few seconds;
# `dlfm run`, the Makefile and the README set them where the user has not (a test pins the copies).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",     # retries per request
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # waits 0, 2, 4 s between the retries (s)
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",        # per request (s)
}
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
def stage_run(stage: str, run_name: str, experiment_name: str = DEFAULT_EXPERIMENT, tags: dict | None = None,
              nested: bool = False, system_metrics: bool = True, run_id: str | None = None) -> Iterator[str]:
    """Start (or continue, under ``mlflow run``) the run of one stage; yield its id.

    The run ends FINISHED on success, KILLED on Ctrl-C/SIGTERM and FAILED on any exception,
    with the reason in the ``dlfm.error`` tag; it never stays RUNNING.
    """
    mlflow = _mlflow()
    configure_tracking()
    launched_by_project = "MLFLOW_RUN_ID" in os.environ and not nested and run_id is None
    run_tags = {"dlfm.stage": stage, "dlfm.pid": str(os.getpid()), "dlfm.host": socket.gethostname(),
                "dlfm.started_at": f"{time.time():.3f}",
                **{k: str(v) for k, v in (tags or {}).items()}}  # REST stores need string tag values
    check_store_writable(mlflow.get_tracking_uri())
    try:
        if not launched_by_project and run_id is None and not nested:
            mlflow.set_experiment(experiment_name)
        if nested:
            parent = mlflow.active_run()
            experiment_id = parent.info.experiment_id if parent else None
            run = mlflow.start_run(run_name=run_name, nested=True, tags=run_tags, experiment_id=experiment_id)
        else:
            run = mlflow.start_run(run_id=run_id, run_name=None if (launched_by_project or run_id) else run_name,
                                   tags=run_tags, log_system_metrics=system_metrics or None)
            if launched_by_project:
                mlflow.set_tag("mlflow.runName", run_name)
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


def active_run_id() -> str | None:
    """Id of the active run, if any."""
    run = _mlflow().active_run()
    return run.info.run_id if run else None


def set_tags(tags: dict) -> None:
    """Set tags on the active run (values become strings)."""
    _mlflow().set_tags({k: str(v) for k, v in tags.items()})


def param_string(value) -> str:
    """A param as MLflow stores it; bools lowercase so they match the MLproject's "true"/"false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def log_params(params: dict) -> None:
    """Log a config dict as params; keys that ``mlflow run`` already logged (as given) are kept."""
    mlflow = _mlflow()
    run = mlflow.active_run()
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data.params if run else {}
    mlflow.log_params({k: param_string(v) for k, v in params.items() if k not in logged})


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log one step of metrics (one call per epoch keeps tracking off the hot path)."""
    _mlflow().log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_figure(figure, artifact_file: str) -> None:
    """Log a matplotlib figure as a PNG artifact (e.g. figures/roc.png) and close it."""
    import matplotlib.pyplot as plt

    _mlflow().log_figure(figure, artifact_file)
    plt.close(figure)


def log_dict(data: dict, artifact_file: str) -> None:
    """Log a dict as a JSON/YAML artifact."""
    _mlflow().log_dict(data, artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    """Log a text artifact (markdown reports, tables)."""
    _mlflow().log_text(text, artifact_file)


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

    source_uri = str(dataset.manifest.get("source_uri") or (dataset.root.resolve() if dataset.root else "memory"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(source_uri)
    name = dataset.manifest.get("name") or (dataset.root.name if dataset.root else "dataset")
    _mlflow().log_input(MetaDataset(source=source, name=name, digest=dataset.digest[:36]), context=context)


def log_encoder(encoder, image_size: int, objective: str) -> str:
    """Log the encoder as the artifact directory ``encoder/`` (format: dlfm.models.serialization)."""
    from dlfm.models.serialization import save_encoder

    with tempfile.TemporaryDirectory() as tmp:
        save_encoder(encoder, tmp, image_size=image_size, objective=objective)
        _mlflow().log_artifacts(tmp, "encoder")
    return "encoder"
