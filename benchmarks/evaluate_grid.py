"""Evaluate grids that survive long runs: stops at random points, resume after a kill at ~80 %, workers 2 vs 1.

Run from the repo root with .venv first on PATH (prints a markdown summary for docs/results-log.md):

    .venv/bin/python benchmarks/evaluate_grid.py [--stops 5] [--skip-stops] [--skip-kill] [--skip-workers]

Everything happens in a throwaway SQLite store under a temporary directory: a random conv4 encoder is
registered and promoted to production, and a tiny model_ii set is simulated.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup(workdir: Path) -> Path:
    """A store with a production encoder; the tiny classification dataset dir."""
    os.chdir(workdir)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
    (workdir / "mlruns").mkdir()
    import torch

    from dlfm.models import create_encoder
    from dlfm.simulation import SimulationConfig, simulate_dataset
    from dlfm.tracking import registry, stage_run

    torch.manual_seed(0)
    with stage_run("multitask", "multitask-bench", "bench-encoder", system_metrics=False) as run_id:
        version = registry.register_encoder_version(create_encoder("conv4"), 64, "multitask", {"val/macro_auc": 0.7}, "d" * 64, run_id)
    registry.promote(version, "production")
    return simulate_dataset(SimulationConfig(preset="model_ii", n_train=48, n_val=12, n_test=24, seed=1),
                            out_dir=workdir / "data", workers=1, progress=False)


def params(dataset: Path, **changes) -> dict:
    base = {"tasks": "classification", "classification_dataset": str(dataset), "budgets": "2,all", "seeds": "0,1",
            "arms": "pretrained-frozen,pretrained-finetune,scratch", "epochs": "2", "min_steps": "20", "batch_size": "8",
            "device": "cpu", "precision": "fp32"}
    return {**base, **changes}


def mlflow_run(experiment: str, values: dict) -> list[str]:
    argv = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "evaluate", "--env-manager", "local",
            "--experiment-name", experiment]
    return argv + [a for k, v in values.items() for a in ("-P", f"{k}={v}")]


def parent_of(experiment: str):
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id], "tags.`dlfm.stage` = 'evaluate'", max_results=1000)
            if "mlflow.parentRunId" not in r.data.tags][0]


def cells_csv(run_id: str) -> str:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation_cells.csv")).read_text()


def unlocked() -> bool:
    connection = sqlite3.connect(os.environ["MLFLOW_TRACKING_URI"][len("sqlite:///"):], timeout=0.5)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()


def finished_children(run_id: str) -> int:
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_run(run_id).info.experiment_id
    return len(client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{run_id}' and attributes.status = 'FINISHED'",
                                  max_results=1000))


def timed(argv: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    return done, time.perf_counter() - start


def stops(dataset: Path, n: int) -> None:
    """SIGTERM to `mlflow run` at n random moments; each: one line? lock? resume → the reference table?"""
    reference, full_s = timed(mlflow_run("bench-ref", params(dataset)))
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = cells_csv(parent_of("bench-ref").info.run_id)
    print(f"reference grid: {full_s:.1f} s under mlflow run")
    rng = random.Random(0)
    for i in range(n):
        at = rng.uniform(0.15, 0.85) * full_s
        process = subprocess.Popen(mlflow_run(f"bench-stop-{i}", params(dataset)), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(at)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate()
        time.sleep(3)  # the entry point outlives the launcher by its last writes
        lines = [line for line in stderr.splitlines() if line.startswith("dlfm:")]
        parent = parent_of(f"bench-stop-{i}")
        resume, resume_s = timed(mlflow_run(f"bench-stop-{i}", {"resume": parent.info.run_id}))
        same = resume.returncode == 0 and cells_csv(parent.info.run_id) == expected
        print(f"| {i + 1} | {at:.1f} s | {len(lines)} line(s), traceback: {'Traceback' in stderr} | "
              f"{parent.info.status} | {'no lock' if unlocked() else 'LOCKED'} | {resume_s:.1f} s | "
              f"{'same table' if same else 'DIFFERENT'} | {lines[0][:110] if lines else ''}")


def kill_at_80(dataset: Path) -> None:
    """Stop a 24-cell grid once ~80 % of its cells finished; resume; count the cells it computed."""
    values = params(dataset, seeds="0,1,2,3")
    full, full_s = timed(mlflow_run("bench-80-full", values))
    assert full.returncode == 0, full.stderr[-2000:]
    process = subprocess.Popen(mlflow_run("bench-80", values), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    total, seen = 24, 0
    while seen < int(0.8 * total):
        line = process.stdout.readline()
        seen += line.startswith("[evaluate] ") and " seed=" in line
    process.send_signal(signal.SIGTERM)
    process.communicate()
    time.sleep(3)
    parent = parent_of("bench-80").info.run_id
    before = finished_children(parent)
    resume, resume_s = timed(mlflow_run("bench-80", {"resume": parent}))
    assert resume.returncode == 0, resume.stderr[-2000:]
    computed = finished_children(parent) - before
    same = cells_csv(parent) == cells_csv(parent_of("bench-80-full").info.run_id)
    print(f"kill at 80 %: {before} of {total} cells finished before the stop; the resume computed {computed} cells "
          f"in {resume_s:.1f} s (whole grid: {full_s:.1f} s); tables {'identical' if same else 'DIFFERENT'}")


def workers(dataset: Path) -> None:
    """16 fine-tune cells on 1 and on 2 worker processes."""
    values = params(dataset, budgets="2,4", seeds="0,1,2,3", arms="pretrained-finetune,scratch", min_steps="40")
    times = {}
    for n in (1, 2):
        done, times[n] = timed(mlflow_run(f"bench-workers-{n}", {**values, "workers": str(n)}))
        assert done.returncode == 0, done.stderr[-2000:]
    same = cells_csv(parent_of("bench-workers-1").info.run_id) == cells_csv(parent_of("bench-workers-2").info.run_id)
    print(f"16 fine-tune cells: workers=1 {times[1]:.1f} s, workers=2 {times[2]:.1f} s, speed-up {times[1] / times[2]:.2f}x; "
          f"cell tables {'identical' if same else 'DIFFERENT'}; load: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stops", type=int, default=5)
    parser.add_argument("--skip-stops", action="store_true")
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--skip-workers", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ["PYTHONPATH"] = str(REPO)
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="dlfm-bench-grid-") as tmp:
        dataset = setup(Path(tmp))
        for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            os.environ.pop(leaked, None)  # else mlflow run refuses --experiment-name
        if not args.skip_workers:
            workers(dataset)
        if not args.skip_stops:
            stops(dataset, args.stops)
        if not args.skip_kill:
            kill_at_80(dataset)


if __name__ == "__main__":
    main()
