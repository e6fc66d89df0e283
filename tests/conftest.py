"""Shared fixtures: a temporary SQLite tracking store per test, and tiny simulated datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MPLBACKEND", "Agg")


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


@pytest.fixture(scope="session")
def tiny_classification_dir(tmp_path_factory) -> Path:
    """A tiny model_ii dataset (12/6/6 images), simulated once per test session."""
    from dlfm.simulation import SimulationConfig, simulate_dataset

    out = tmp_path_factory.mktemp("data")
    return simulate_dataset(SimulationConfig(preset="model_ii", n_train=24, n_val=12, n_test=12, seed=1), out_dir=out, workers=1, progress=False)


@pytest.fixture(scope="session")
def tiny_regression_dir(tmp_path_factory) -> Path:
    """A tiny regression dataset, simulated once per test session."""
    from dlfm.simulation import SimulationConfig, simulate_dataset

    out = tmp_path_factory.mktemp("data")
    return simulate_dataset(SimulationConfig(preset="regression", n_train=24, n_val=12, n_test=12, seed=2), out_dir=out, workers=1, progress=False)


def run_script(args: list[str], cwd: Path, env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a pipeline script or CLI with the repo's Python; capture output."""
    env = {**os.environ, **(env_extra or {})}
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leaked, None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
