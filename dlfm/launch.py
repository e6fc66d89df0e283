"""``dlfm run``: ``mlflow run`` with the tracking store checked first and fast-failing HTTP defaults.

``mlflow run`` talks to the tracking store *before* any dlfm code runs: it creates the run,
logs the ``-P`` values, then starts the entry point. An unreachable server there means minutes
of MLflow retries and a long traceback; a read-only SQLite store means a SQLAlchemy traceback.
``dlfm run ARGS`` checks both first (one ``dlfm: error:`` line, a few seconds), sets the HTTP
defaults below where the user has not, puts its own Python first on PATH for a local environment,
and then becomes ``mlflow run ARGS`` (``exec``), so signals, output and exit codes are exactly
those of ``mlflow run``.
"""

from __future__ import annotations

import os
import sys

from dlfm.tracking.store import HTTP_DEFAULTS


def mlflow_run_argv(args: list[str]) -> list[str]:
    """The ``mlflow run`` command for ``args``; ``--env-manager local`` added when not given (dlfm runs in .venv)."""
    if any(a == "--env-manager" or a.startswith("--env-manager=") for a in args):
        return [sys.executable, "-m", "mlflow", "run", *args]
    return [sys.executable, "-m", "mlflow", "run", *args, "--env-manager", "local"]


def runs_in_this_environment(argv: list[str]) -> bool:
    """Whether ``mlflow run`` argv runs the entry point with ``--env-manager local`` (as given or as dlfm adds it)."""
    for index, arg in enumerate(argv):
        if arg.startswith("--env-manager="):
            return arg.split("=", 1)[1] == "local"
        if arg == "--env-manager":
            return argv[index + 1:index + 2] == ["local"]
    return False


def path_with_this_python_first(path: str) -> str:
    """PATH with this interpreter's folder first, so that the entry point's ``python`` is the one that runs dlfm.

    ``--env-manager local`` runs the MLproject command (``python pipelines/<entry>.py``) with whatever ``python``
    PATH finds: `.venv/bin/dlfm run ...` from a shell without the venv activated would start the system Python,
    which has no dlfm, and the run would end FAILED on an ImportError.
    """
    folder = os.path.dirname(os.path.abspath(sys.executable))
    return os.pathsep.join([folder, *(p for p in path.split(os.pathsep) if p and p != folder)])


def param_texts(args: list[str]) -> list[str]:
    """The ``name=value`` texts of ``-P name=value`` / ``-Pname=value`` / ``--param-list name=value`` in ``mlflow run`` arguments."""
    texts, take = [], False
    for arg in args:
        if take or arg.startswith(("-P", "--param-list=")) and arg not in ("-P", "--param-list"):
            texts.append(arg if take else arg.split("=", 1)[1] if arg.startswith("--param-list=") else arg[2:])
        take = arg in ("-P", "--param-list")
    return texts


def param_values(args: list[str]) -> list[tuple[str, str]]:
    """The (name, value) pairs of the ``-P`` params in ``mlflow run`` arguments."""
    return [(name, value) for name, _, value in (text.partition("=") for text in param_texts(args))]


def check_param_syntax(args: list[str]) -> None:
    """Refuse a ``-P`` that ``mlflow run`` would crash on after creating its run (left RUNNING, with no dlfm tag).

    ``"-P encoder=conv4"`` typed as one shell word reaches MLflow as the param `` encoder``.
    """
    import re

    from dlfm.errors import ConfigError

    if args and args[-1] in ("-P", "--param-list"):
        raise ConfigError(f"{args[-1]} needs a value: write -P name=value, e.g. -P epochs=2")
    for text in param_texts(args):
        name, equals, value = text.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][\w.\-]*", name):
            raise ConfigError(f"-P {text!r} is not name=value with a plain name"
                              + (" (a space after -P inside one quoted word?)" if text[:1].isspace() else "")
                              + f"; write it as two words: -P {text.strip() if equals else 'name=value'}")


def check_no_secret_params(args: list[str]) -> None:
    """Refuse a ``-P`` value that carries a password before ``mlflow run`` stores it as a param (and prints it)."""
    from dlfm.errors import SecretInParams
    from dlfm.redact import has_secret, redact

    for name, value in param_values(args):
        if has_secret(value):
            raise SecretInParams(f"-P {name}={redact(value)} carries a password, which mlflow run would store as a "
                                 f"param and print; export the URL in an environment variable and pass its name instead "
                                 f"(tune: -P storage=env:OPTUNA_STORAGE), or drop the password and export PGPASSWORD")


USAGE = ("usage: dlfm run [PROJECT] -e ENTRY [-P name=value ...]: the arguments of `mlflow run`, "
         "e.g. dlfm run . -e multitask -P epochs=2")


def print_help() -> None:
    """``dlfm run --help``: what dlfm adds, then ``mlflow run --help`` (exit 0, as every --help)."""
    import subprocess

    print(USAGE)
    print("Checks that the tracking store answers (10 s at most) and is writable, adds --env-manager local unless "
          "given, sets fast-failing MLFLOW_HTTP_REQUEST_* defaults, then becomes `mlflow run` with these options:\n",
          flush=True)
    subprocess.run([sys.executable, "-m", "mlflow", "run", "--help"], check=False)


def launch(args: list[str]) -> None:
    """Check the tracking store, then replace this process with ``mlflow run args`` (never returns on success)."""
    from dlfm.errors import ConfigError
    from dlfm.tracking.store import check_store_writable, resolve_tracking_uri

    if not args:
        raise ConfigError(USAGE)
    check_param_syntax(args)  # before mlflow run creates a run it could leave RUNNING
    check_no_secret_params(args)  # before anything is stored
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    uri = resolve_tracking_uri()  # an http(s) store must answer within 10 s, with our credentials
    check_store_writable(uri)  # mlflow is not imported on this path: a refusal takes about a second
    sys.stdout.flush()
    sys.stderr.flush()
    argv = mlflow_run_argv(args)
    if runs_in_this_environment(argv):
        os.environ["PATH"] = path_with_this_python_first(os.environ.get("PATH", ""))
    os.execv(argv[0], argv)
