"""``dlfm server``: a checked wrapper over ``mlflow server --app-name basic-auth`` (see docs/team-server.md).

Before MLflow starts, the wrapper checks what usually goes wrong, so that each problem is one
line rather than a traceback or a loop of crashing uvicorn workers:

- the secrets ``MLFLOW_FLASK_SERVER_SECRET_KEY`` and ``MLFLOW_AUTH_ADMIN_PASSWORD`` are set
  in the environment (never on the command line, never in the repo);
- the backend store (PostgreSQL) and the auth database answer;
- the artifact bucket exists (``--s3-endpoint-url`` / ``MLFLOW_S3_ENDPOINT_URL`` for MinIO/Ceph);
- the port is free.

Then it runs::

    mlflow server --app-name basic-auth --backend-store-uri URI --artifacts-destination URI \\
        --serve-artifacts --host 127.0.0.1 --port 5000 [--workers N ...] [-- other mlflow options]

Artifacts go through the server (``--serve-artifacts``), so only the server holds S3
credentials. The basic-auth app reads a generated ``basic_auth.ini`` (auth tables in
``--auth-db-uri``, by default beside the tracking tables; ``default_permission``; the admin's
user name); the admin password stays in the environment and is never written to disk.
MLflow's host-header and CORS protections stay on: the wrapper refuses to disable them.

``dlfm.tracking.store.check_tracking_server`` is the client-side counterpart: entry points call it so that an
unreachable server or wrong credentials are one line instead of minutes of HTTP retries.
"""

from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from dlfm.errors import ConfigError, DlfmError
from dlfm.redact import redact_uri, scrub

SECRET_ENV = ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD")
MIN_PASSWORD_LENGTH = 12  # MLflow's basic-auth password policy (mlflow.utils.validation._validate_password)
# default_permission: what a signed-in user may do on resources nobody granted them.
# READ: everyone on the team sees every experiment and model; edits need a grant.
DEFAULT_PERMISSION = "READ"
PERMISSIONS = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")
DB_SCHEMES = ("postgresql", "mysql", "mssql", "sqlite")
CONNECT_TIMEOUT_S = 5
# mlflow server options dlfm sets itself, or that would turn its protections off.
REFUSED_OPTIONS = {
    "--disable-security-middleware": "MLflow's host and CORS protections stay on; use --allowed-hosts/--cors-allowed-origins instead",
    "--dev": "--dev is for MLflow development and cannot run the basic-auth app",
    "--app-name": "dlfm server always runs --app-name basic-auth",
    "--no-serve-artifacts": "clients upload artifacts through the server, so it must serve them",
    "--backend-store-uri": "give --backend-store-uri before `--`, where dlfm checks it",
    "--artifacts-destination": "give --artifacts-destination before `--`, where dlfm checks it",
}


def add_parser(commands) -> None:
    """Register the ``server`` subcommand."""
    parser = commands.add_parser(
        "server", help="run the team MLflow tracking server (PostgreSQL + S3 + basic auth)",
        description="Check the inputs, then run `mlflow server --app-name basic-auth` on them. Secrets come from the "
                    "environment: MLFLOW_FLASK_SERVER_SECRET_KEY, MLFLOW_AUTH_ADMIN_PASSWORD and the AWS credentials. "
                    "Other `mlflow server` options go after `--`.")
    parser.add_argument("--backend-store-uri", default=os.environ.get("MLFLOW_BACKEND_STORE_URI"),
                        help="SQLAlchemy URL of the tracking/registry database, e.g. postgresql://mlflow@db/mlflow "
                             "(default: $MLFLOW_BACKEND_STORE_URI)")
    parser.add_argument("--artifacts-destination", default=os.environ.get("MLFLOW_ARTIFACTS_DESTINATION"),
                        help="where the server stores artifacts, e.g. s3://lensing-artifacts/mlflow "
                             "(default: $MLFLOW_ARTIFACTS_DESTINATION)")
    parser.add_argument("--s3-endpoint-url", default=None,
                        help="S3-compatible endpoint (MinIO, Ceph), passed on as MLFLOW_S3_ENDPOINT_URL "
                             "(default: $MLFLOW_S3_ENDPOINT_URL, else AWS)")
    parser.add_argument("--auth-db-uri", default=None,
                        help="SQLAlchemy URL of the users/permissions database (default: the backend store; "
                             "its tables and migration history are separate from MLflow's)")
    parser.add_argument("--auth-config", default=None,
                        help="where to write the generated basic_auth.ini (default: a private temp dir, removed on exit)")
    parser.add_argument("--admin-username", default=os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin",
                        help="the admin created on first start (password: $MLFLOW_AUTH_ADMIN_PASSWORD); default admin")
    parser.add_argument("--default-permission", default=DEFAULT_PERMISSION, type=str.upper, choices=PERMISSIONS,
                        help=f"what a signed-in user may do where nobody granted them anything (default {DEFAULT_PERMISSION})")
    parser.add_argument("--auth-cache-seconds", type=int, default=0,
                        help="cache a verified login this long in each worker (default 0: MLflow's default, every request "
                             "re-hashes the password; >0 is faster, but a changed or deleted password keeps working that long)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1: this machine only; 0.0.0.0 for the network, "
                             "then also set --allowed-hosts)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--workers", type=int, default=None, help="uvicorn worker processes (MLflow's default: 4)")
    parser.add_argument("--allowed-hosts", default=None,
                        help="Host headers to accept, e.g. mlflow.lab.org,10.0.0.5:5000 (MLflow's default: localhost and private IPs)")
    parser.add_argument("--cors-allowed-origins", default=None,
                        help="browser origins allowed to call the API, e.g. https://notebooks.lab.org (default: localhost)")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the reachability checks of the store and the bucket (the secrets are always checked)")
    parser.add_argument("mlflow_options", nargs="*", metavar="-- MLFLOW_OPTION",
                        help="more `mlflow server` options, after `--` (e.g. -- --static-prefix /mlflow --expose-prometheus /tmp/prom)")
    parser.set_defaults(func=run_server)


# ----------------------------------------------------------------------------- checks


def check_secrets(env=os.environ) -> None:
    """The server's secrets are set, and the admin password meets MLflow's policy."""
    for name in SECRET_ENV:
        if not env.get(name):
            raise ConfigError(f"{name} is not set; export it in the server's environment (a long random string, kept out of the repo)")
    if len(env["MLFLOW_AUTH_ADMIN_PASSWORD"]) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"MLFLOW_AUTH_ADMIN_PASSWORD is shorter than {MIN_PASSWORD_LENGTH} characters, "
                          "which MLflow refuses; export a longer one")


def with_installed_driver(uri: str) -> str:
    """``postgresql://`` → ``postgresql+psycopg2://`` when only psycopg2 is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which the pinned environment
    lacks (it has psycopg2-binary), so MLflow would fail on the URL the docs show.
    """
    import importlib.util

    if uri.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + uri[len("postgresql://"):]
    return uri


def check_auth_extra() -> None:
    """MLflow's basic-auth app imports Flask-WTF, which only the ``mlflow[auth]`` extra installs."""
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:
        raise ConfigError("the basic-auth app needs Flask-WTF, which is not installed; run: pip install 'mlflow[auth]==3.17.2'")


def check_database(uri: str, what: str, option: str) -> None:
    """Connect to a SQLAlchemy database URL once; ConfigError naming ``option`` if it does not answer."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in DB_SCHEMES:
        raise ConfigError(f"{what} {redact_uri(uri)!r} is not a database URL; pass {option} postgresql://USER@HOST/DB "
                          "(MLflow's file store is deprecated)")
    if scheme == "sqlite":
        path = uri.split(":///", 1)[-1]
        if path and path != ":memory:" and not Path(path).resolve().parent.is_dir():
            raise ConfigError(f"{what} {uri}: directory {Path(path).parent} does not exist; create it or fix {option}")
        return
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if scheme in ("postgresql", "mysql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
    except (ArgumentError, NoSuchModuleError) as error:
        raise ConfigError(f"{what} {redact_uri(uri)!r} cannot be used ({scrub(str(error).splitlines()[0], uri)}); fix {option}") from None
    except ImportError as error:
        raise ConfigError(f"{what} {redact_uri(uri)!r} needs the database driver {error.name!r}, which is not installed; "
                          f"install it or name an installed driver in {option} (e.g. postgresql+psycopg2://)") from None
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except SQLAlchemyError as error:
        reason = scrub(" ".join(str(getattr(error, "orig", None) or error).split()), uri)[:300]
        fix = (f"create the database (createdb) or fix {option}" if "does not exist" in reason
               else f"fix the user/password in {option}" if "authentication" in reason or "password" in reason
               else f"start the database or fix the host/port in {option}")
        raise ConfigError(f"{what} {redact_uri(uri)} is unreachable ({reason}); {fix}") from None
    finally:
        engine.dispose()


def check_artifacts_destination(uri: str, endpoint_url: str | None) -> None:
    """An s3:// destination's bucket exists and our credentials reach it; local paths are created by MLflow."""
    if not uri.startswith("s3://"):
        return
    from dlfm.data.remote import describe_s3_error, s3_client, s3_endpoint_url, split_s3_uri
    from dlfm.errors import DatasetError

    try:
        bucket, _ = split_s3_uri(uri)
    except DatasetError as error:
        raise ConfigError(f"--artifacts-destination: {error}") from None
    endpoint_url = s3_endpoint_url(endpoint_url)
    try:
        s3_client(endpoint_url).head_bucket(Bucket=bucket)
    except Exception as error:  # noqa: BLE001 - every boto failure becomes one line naming the bucket
        reason = describe_s3_error(error, bucket, None, endpoint_url)
        raise ConfigError(f"artifacts destination {uri}: {reason}") from None


def check_port_free(host: str, port: int) -> None:
    """Nothing else listens on host:port (uvicorn would otherwise fail after the workers start)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As uvicorn does: a port in TIME_WAIT is free, one with a listener is not (Linux semantics).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror}); pick another --port or stop what uses it") from None


def check_mlflow_options(options: list[str], env=os.environ) -> None:
    """Pass-through options don't override dlfm's own settings or switch the protections off."""
    if options and not options[0].startswith("-"):
        raise ConfigError(f"unexpected argument {options[0]!r}; `mlflow server` options go after `--`, e.g. -- --static-prefix /mlflow")
    for option in options:
        name = option.split("=", 1)[0]
        if name in REFUSED_OPTIONS:
            raise ConfigError(f"{name} is not allowed here: {REFUSED_OPTIONS[name]}")
    if str(env.get("MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE", "")).strip().lower() in ("true", "1", "yes"):
        raise ConfigError("MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE is set; unset it: dlfm server keeps MLflow's host and CORS protections on")


def check_security_options(args) -> None:
    """Wildcards would switch the host-header or CORS check off, so name the hosts and origins instead."""
    if args.allowed_hosts and "*" in [h.strip() for h in args.allowed_hosts.split(",")]:
        raise ConfigError("--allowed-hosts '*' turns the Host-header check off; list the names clients use, e.g. mlflow.lab.org,10.0.0.5:5000")
    if args.cors_allowed_origins and "*" in [o.strip() for o in args.cors_allowed_origins.split(",")]:
        raise ConfigError("--cors-allowed-origins '*' lets any website call the API; list the origins, e.g. https://notebooks.lab.org")


# ----------------------------------------------------------------------------- running


def write_auth_config(path: Path, database_uri: str, admin_username: str, default_permission: str,
                      auth_cache_seconds: int = 0) -> Path:
    """Write basic_auth.ini (mode 600: the database URL may hold a password); no admin password in it."""
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": default_permission,
        # MLflow reads this file with configparser's %-interpolation: a percent-encoded password
        # (p%40ss) would crash it and be printed in the traceback, so every % is escaped.
        "database_uri": database_uri.replace("%", "%%"),
        "admin_username": admin_username,
        # admin_password is left out on purpose: MLflow reads MLFLOW_AUTH_ADMIN_PASSWORD from the environment.
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": str(auth_cache_seconds),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        config.write(handle)
    return path


def mlflow_command(args) -> list[str]:
    """The ``mlflow server`` command line for the checked args."""
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow)] if mlflow.exists() else [sys.executable, "-m", "mlflow"]
    # The backend store URI (it may hold a password) goes through MLFLOW_BACKEND_STORE_URI (see
    # server_env), never onto the command line, where `ps -ef` shows it to every local user.
    command += ["server", "--app-name", "basic-auth",
                "--artifacts-destination", args.artifacts_destination, "--serve-artifacts",
                "--host", args.host, "--port", str(args.port)]
    for option, value in (("--workers", args.workers), ("--allowed-hosts", args.allowed_hosts),
                          ("--cors-allowed-origins", args.cors_allowed_origins)):
        if value is not None:
            command += [option, str(value)]
    return command + list(args.mlflow_options)


def check_server_args(args, env=os.environ) -> None:
    """Every check, cheapest first; raises ConfigError with one line on the first problem."""
    if not args.backend_store_uri:
        raise ConfigError("no backend store; pass --backend-store-uri postgresql://USER@HOST/DB (or set MLFLOW_BACKEND_STORE_URI)")
    if not args.artifacts_destination:
        raise ConfigError("no artifact store; pass --artifacts-destination s3://BUCKET/PREFIX (or set MLFLOW_ARTIFACTS_DESTINATION)")
    if args.auth_cache_seconds < 0:
        raise ConfigError(f"--auth-cache-seconds must be >= 0, got {args.auth_cache_seconds}")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    check_secrets(env)
    check_auth_extra()
    check_mlflow_options(args.mlflow_options, env)
    check_security_options(args)
    check_port_free(args.host, args.port)
    if args.check:
        check_database(args.backend_store_uri, "backend store", "--backend-store-uri")
        if args.auth_db_uri and args.auth_db_uri != args.backend_store_uri:
            check_database(args.auth_db_uri, "auth database", "--auth-db-uri")
        check_artifacts_destination(args.artifacts_destination, args.s3_endpoint_url)


def run_server(args) -> None:
    """Check the inputs, write basic_auth.ini, run ``mlflow server`` until it exits; forward SIGINT/SIGTERM."""
    args.mlflow_options = [o for o in (args.mlflow_options or []) if o != "--"]
    if args.backend_store_uri:
        args.backend_store_uri = with_installed_driver(args.backend_store_uri)
    if args.auth_db_uri:
        args.auth_db_uri = with_installed_driver(args.auth_db_uri)
    check_server_args(args)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.allowed_hosts:
        print(f"dlfm: note: listening on {args.host}; MLflow accepts only localhost and private-IP Host headers "
              "unless you list the server's name with --allowed-hosts", file=sys.stderr)

    env = dict(os.environ)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    # MLflow's GenAI job runner (online scoring, trace archival) starts seven huey worker processes,
    # each importing MLflow; dlfm uses none of it. Opt back in with MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if args.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = args.s3_endpoint_url
    env["MLFLOW_BACKEND_STORE_URI"] = args.backend_store_uri  # not argv: see mlflow_command
    with tempfile.TemporaryDirectory(prefix="dlfm-server-") as tmp:
        ini = Path(args.auth_config) if args.auth_config else Path(tmp) / "basic_auth.ini"
        write_auth_config(ini, args.auth_db_uri or args.backend_store_uri, args.admin_username, args.default_permission,
                          args.auth_cache_seconds)
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
        command = mlflow_command(args)
        print(f"dlfm: starting MLflow on http://{args.host}:{args.port} (store {redact_uri(args.backend_store_uri)}, "
              f"artifacts {args.artifacts_destination}, default permission {args.default_permission})", file=sys.stderr, flush=True)
        process = subprocess.Popen(command, env=env)

        def forward(signum, _frame):
            # mlflow server forwards the signal on to uvicorn and its workers, so all of them stop.
            if process.poll() is None:
                process.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            returncode = process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise DlfmError(f"mlflow server exited with status {returncode}; see its log above")
