"""The tracking store: which URI (``MLFLOW_TRACKING_URI`` or the project's SQLite store), and whether it can be used.

Configuring MLflow's URI, refusing a read-only SQLite store, checking a tracking server answers and accepts
the credentials (once per process), and noting a run filed outside the project's store.
"""

from __future__ import annotations

import os
from pathlib import Path

from dlfm.errors import DlfmError
from dlfm.redact import redact_uri

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
# MLflow's HTTP client defaults (7 retries, backoff factor 2, 120 s per request) make an unreachable
# server cost minutes before any error. These still ride out a server restart of a few seconds;
# `dlfm run` and the Makefile set them where the user has not, docs/development.md shows them (a test pins the copies).
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
