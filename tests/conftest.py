"""Shared fixtures: a temporary SQLite tracking store per test, tiny simulated datasets, and the
real services some tests need (moto S3, a throwaway PostgreSQL database, free ports, server
processes), each cleaned up even when the test run itself is killed.

Cleanup of a killed run: every process started with ``spawn_process_group`` leads its own process
group, and every database made by ``throwaway_postgres_database`` is recorded; an ``atexit``
hook kills the groups and drops the databases. SIGTERM (e.g. CI's timeout) is turned into
KeyboardInterrupt so that pytest tears the fixtures down and ``atexit`` runs; on Linux, spawned
groups also get SIGTERM from the kernel when the pytest process dies of SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MPLBACKEND", "Agg")


def _share_the_cores_among_xdist_workers() -> None:
    """Under ``-n N``, each worker (and every process it starts) gets cores // N torch/OpenMP threads.

    Two workers on two cores with torch's default of one thread per core ask for four threads at once; OpenMP's
    waiting threads then spin on a core the other worker needs. Measured on the 2-core box under load: one
    ViT mae fit took 19.0 CPU-s at 2 threads and 3.8 CPU-s at 1. Set before torch is imported (xdist sets the
    count before it reads this conftest), inherited by subprocesses; an OMP_NUM_THREADS of the user's own wins.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if workers.isdigit() and int(workers) > 0:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))


_share_the_cores_among_xdist_workers()


@pytest.fixture(scope="session")
def empty_store_template(tmp_path_factory) -> Path:
    """An SQLite store with MLflow's schema migrations already applied (they take seconds), to copy."""
    import mlflow

    folder = tmp_path_factory.mktemp("template")
    path = folder / "mlflow.db"
    previous = os.getcwd()
    os.chdir(folder)  # the Default experiment's artifact root is resolved against the cwd
    try:
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    finally:
        os.chdir(previous)
    return path


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch, empty_store_template) -> str:
    """A fresh SQLite store (artifacts beside it) as MLFLOW_TRACKING_URI for this test."""
    import shutil

    import mlflow

    (tmp_path / "mlruns").mkdir()
    shutil.copy(empty_store_template, tmp_path / "mlruns" / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # new experiments put artifacts under ./mlruns: keep them in tmp_path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(leaked, raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


def checksum(module) -> str:
    """SHA-256 of a module's parameters and buffers (BatchNorm running statistics included): unchanged means untouched."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture
def production_version(tracking_uri) -> str:
    """A registered conv4 encoder (64 px, multitask, random seeded weights) holding the production alias."""
    import torch

    from dlfm.models import create_encoder
    from dlfm.tracking import registry, stage_run

    torch.manual_seed(0)
    with stage_run("multitask", "multitask-test", "evaluate-test", system_metrics=False) as run_id:
        version = registry.register_encoder_version(create_encoder("conv4"), 64, "multitask", {"val/macro_auc": 0.7}, "d" * 64, run_id)
    registry.promote(version, "production")
    return version


@pytest.fixture(scope="session")
def tiny_classification_dir(tmp_path_factory) -> Path:
    """A tiny model_ii dataset (24/12/12 images), simulated once per test session."""
    from dlfm.simulation import SimulationConfig, simulate_dataset

    out = tmp_path_factory.mktemp("data")
    return simulate_dataset(SimulationConfig(preset="model_ii", n_train=24, n_val=12, n_test=12, seed=1), out_dir=out, workers=1, progress=False)


@pytest.fixture(scope="session")
def tiny_regression_dir(tmp_path_factory) -> Path:
    """A tiny regression dataset (24/12/12 images), simulated once per test session."""
    from dlfm.simulation import SimulationConfig, simulate_dataset

    out = tmp_path_factory.mktemp("data")
    return simulate_dataset(SimulationConfig(preset="regression", n_train=24, n_val=12, n_test=12, seed=2), out_dir=out, workers=1, progress=False)


def run_script(args: list[str], cwd: Path, env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a pipeline script or CLI with the repo's Python; capture output (``env_extra`` may set the MLflow run and
    experiment variables that this process's own environment never passes on)."""
    env = dict(os.environ)
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leaked, None)
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def mlflow_run(entry_point: str, params: dict, experiment: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``mlflow run <repo> -e <entry_point> --env-manager local`` with ``params``, as a user types it; this Python's bin first on PATH."""
    args = ["-m", "mlflow", "run", str(REPO), "-e", entry_point, "--env-manager", "local", "--experiment-name", experiment]
    for name, value in params.items():
        args += ["-P", f"{name}={value}"]
    bin_dirs = os.pathsep.join([str(REPO / ".venv" / "bin"), os.path.dirname(sys.executable), os.environ["PATH"]])
    return run_script(args, cwd=cwd, env_extra={"PATH": bin_dirs}, timeout=timeout)


# ----------------------------------------------------------------------------- services and processes

AWS_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
_LIVE_GROUPS: dict[int, subprocess.Popen] = {}  # process-group id -> leader, until stopped
_LIVE_DATABASES: set[str] = set()  # throwaway PostgreSQL databases not dropped yet


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn (Linux): the child gets SIGTERM when pytest dies, even of SIGKILL (no atexit then)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_for_http(url: str, process: subprocess.Popen, timeout_s: float, what: str) -> None:
    """Poll ``url`` until it answers; AssertionError naming ``what`` if ``process`` dies or time runs out."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, f"{what} did not start"
            time.sleep(0.5)


def spawn_process_group(command: list[str], **popen_kwargs) -> subprocess.Popen:
    """Popen ``command`` as the leader of a new process group that this test run will not leave behind."""
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    process = subprocess.Popen(command, start_new_session=True, preexec_fn=preexec, **popen_kwargs)
    _LIVE_GROUPS[process.pid] = process
    return process


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_process_group(process: subprocess.Popen, grace_s: float = 30) -> bool:
    """SIGTERM the group's leader, wait for the whole group, SIGKILL what remains; True if it stopped on its own."""
    clean = True
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
    deadline = time.monotonic() + grace_s
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(process.pid):
        clean = False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    _LIVE_GROUPS.pop(process.pid, None)
    return clean


def require_postgres():
    """A psycopg2 connection to the maintenance database, or skip (fail under DLFM_REQUIRE_SERVICES=1)."""
    import psycopg2

    try:
        connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError as error:
        message = f"PostgreSQL at 127.0.0.1:5432 is not available ({' '.join(str(error).split())})"
        if os.environ.get("DLFM_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message}; DLFM_REQUIRE_SERVICES=1 requires it")
        pytest.skip(message)
    connection.autocommit = True
    return connection


def _drop_database(admin, name: str) -> None:
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _LIVE_DATABASES.discard(name)


@contextlib.contextmanager
def throwaway_postgres_database(prefix: str = "dlfm_test"):
    """Yield the URL of a new database <prefix>_<random> at 127.0.0.1:5432; dropped afterwards (and at exit)."""
    admin = require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    _LIVE_DATABASES.add(name)
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        _drop_database(admin, name)
        admin.close()


@atexit.register
def _leave_nothing_behind() -> None:
    """Kill process groups and drop databases that an interrupted run did not get to clean up."""
    for process in list(_LIVE_GROUPS.values()):
        with contextlib.suppress(Exception):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    if _LIVE_DATABASES:
        with contextlib.suppress(Exception):
            import psycopg2

            admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
            admin.autocommit = True
            for name in list(_LIVE_DATABASES):
                _drop_database(admin, name)
            admin.close()


def pytest_configure(config) -> None:
    """SIGTERM becomes KeyboardInterrupt, so fixture teardown and atexit run (the default handler skips both)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, interrupt)


# `make test` runs two pytest-xdist workers with --dist loadfile (a module's tests, and so its module and
# session fixtures, stay on one worker). The scheduler hands out modules in collection order, so the
# longest ones (from `pytest --durations`, docs/results-log.md) go first and short ones fill the gaps;
# a stale list only costs wall time, never a test.
LONGEST_MODULES_FIRST = ("test_main.py", "test_gpu_report.py", "test_bad_inputs.py", "test_server.py", "test_fault_tolerance.py",
                         "test_tune.py", "test_stages.py", "test_evaluate.py", "test_registry.py", "test_ui.py")


def pytest_collection_modifyitems(items) -> None:
    """Longest modules first (stable: every worker must collect the same order)."""
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_MODULES_FIRST.index(name) if name in LONGEST_MODULES_FIRST else len(LONGEST_MODULES_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="module")
def moto_s3(request):
    """moto's S3 server on a free localhost port, fake credentials in os.environ, and the test
    module's ``S3_BUCKETS`` created; yields (endpoint, client)."""
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in {**AWS_TEST_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": endpoint}.items():
                patch.setenv(name, value)
            patch.delenv("AWS_ENDPOINT_URL", raising=False)
            patch.delenv("AWS_PROFILE", raising=False)
            from dlfm.data.remote import s3_client

            client = s3_client(endpoint)
            for bucket in getattr(request.module, "S3_BUCKETS", ()):
                client.create_bucket(Bucket=bucket)
            yield SimpleNamespace(endpoint=endpoint, client=client)
    finally:
        moto.stop()


@pytest.fixture(scope="module")
def postgres_uri():
    """A throwaway PostgreSQL database for the test module, dropped afterwards."""
    with throwaway_postgres_database("dlfm_test") as uri:
        yield uri


@pytest.fixture
def postgres_storage():
    """A throwaway PostgreSQL database for one test (e.g. an Optuna storage), dropped afterwards."""
    with throwaway_postgres_database("dlfm_tune") as uri:
        yield uri
