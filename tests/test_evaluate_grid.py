"""Long evaluate grids: a stop is a request read at safe points, resume by cell, cells on several workers."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time

import mlflow
import pytest
import torch

from conftest import REPO, run_script
from dlfm.errors import ConfigError
from dlfm.evaluation import EvaluateConfig, grid
from dlfm.evaluation.grid import Cell, owners
from dlfm.stages.evaluate import run_evaluate_stage
from dlfm.tracking.checkpoints import RESUME_HINT_TAG
from dlfm.training.interrupt import GridInterrupted



def tiny(cls_dir, reg_dir, **changes) -> EvaluateConfig:
    base = dict(classification_dataset=str(cls_dir), regression_dataset=str(reg_dir), budgets="2,all", seeds="0,1",
                arms="pretrained-frozen,pretrained-finetune,scratch", epochs=1, min_steps=2, batch_size=8, device="cpu",
                precision="fp32", experiment_name="grid-test")
    return EvaluateConfig(**{**base, **changes})


def runs(parent_id: str) -> list:
    client = mlflow.MlflowClient()
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000)


def signal_at_cell(monkeypatch, k: int, signum=signal.SIGTERM) -> None:
    """Send ourselves a real signal as cell ``k`` (1-based) starts computing: its first safe point stops it."""
    original, calls = grid.run_cell, []

    def run_cell(*args, **kwargs):
        calls.append(1)
        if len(calls) == k:
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(grid, "run_cell", run_cell)


def assert_unlocked(tracking_uri: str) -> None:
    """Nothing holds a lock on the SQLite store: a write transaction starts at once."""
    connection = sqlite3.connect(tracking_uri[len("sqlite:///"):], timeout=0.5)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()
    finally:
        connection.close()


def test_owners_share_every_cell_once_and_balance_the_fine_tune_work():
    cells = [Cell("classification", b, arm, s, 6, 2) for s in range(4) for b in (2, 5)
             for arm in ("pretrained-frozen", "pretrained-finetune", "scratch")]
    config = EvaluateConfig(epochs=1, min_steps=2, batch_size=8)
    owner = owners(cells, config, 2)
    assert owner == owners(cells, config, 2) and set(owner) == {0, 1}  # deterministic: ranks agree without talking
    finetune = [o for c, o in zip(cells, owner) if c.arm != "pretrained-frozen"]
    assert finetune.count(0) == finetune.count(1)
    assert owners(cells, config, 1) == [0] * len(cells)


def test_resume_refuses_another_config_in_one_line():
    config = EvaluateConfig(resume="abc", budgets="25,all", workers=2)
    saved = {k: str(v) for k, v in EvaluateConfig(budgets="25,100").to_dict().items()}
    with pytest.raises(ConfigError, match=r"^resume=abc was evaluated with another config: budgets='25,all' \(run abc: '25,100'\)"):
        config.resumed_from(saved)
    merged = EvaluateConfig(resume="abc", workers=3).resumed_from(saved)
    assert merged.budgets == "25,100" and merged.workers == 3  # defaults take the run's values; workers may change
    assert merged.cell_digest() == EvaluateConfig(budgets="25,100").cell_digest()


def test_stop_mid_cell_then_resume_equals_an_uninterrupted_grid(production_version, tracking_uri, monkeypatch,
                                                                 tiny_classification_dir, tiny_regression_dir):
    # one seed (2 seeds doubled the cost): 6 cells, the stop at cell 4 still kills one mid-grid and leaves 3 to resume
    config = tiny(tiny_classification_dir, tiny_regression_dir, budgets="2", seeds="0")
    reference = run_evaluate_stage(config)
    total = 2 * 1 * 3  # tasks × seeds × arms

    with monkeypatch.context() as patch:
        signal_at_cell(patch, 4)
        with pytest.raises(GridInterrupted) as raised:
            run_evaluate_stage(config)
    stopped = raised.value
    assert stopped.signal_name == "SIGTERM" and stopped.done == 3 and stopped.total == total
    assert f"-P resume=" in stopped.hint and str(stopped).startswith(f"SIGTERM received; stopped with 3 of {total} cells finished")
    client = mlflow.MlflowClient()
    [parent] = [r for r in client.search_runs([client.get_experiment_by_name("grid-test").experiment_id],
                                              "attributes.status = 'KILLED'") if "mlflow.parentRunId" not in r.data.tags]
    parent_id = parent.info.run_id
    assert stopped.hint.endswith(f"-e evaluate --env-manager local -P resume={parent_id}")
    assert parent.data.tags[RESUME_HINT_TAG] == stopped.hint
    children = runs(parent_id)
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 3 + ["KILLED"]
    [killed] = [c for c in children if c.info.status == "KILLED"]
    assert killed.data.tags[RESUME_HINT_TAG] == stopped.hint
    assert_unlocked(tracking_uri)

    resumed = run_evaluate_stage(EvaluateConfig(resume=parent_id, device="cpu"))
    assert resumed["run_id"] == parent_id and client.get_run(parent_id).info.status == "FINISHED"
    assert RESUME_HINT_TAG not in client.get_run(parent_id).data.tags
    children = runs(parent_id)
    assert sum(c.info.status == "FINISHED" for c in children) == total  # the 3 finished cells were not run again
    assert resumed["rows"] == reference["rows"] and resumed["markdown"] == reference["markdown"]  # bit-identical on CPU


def test_resume_with_another_dataset_is_refused_naming_it(production_version, tracking_uri, monkeypatch,
                                                          tiny_classification_dir, tiny_regression_dir, tmp_path):
    import shutil

    from dlfm.simulation import SimulationConfig, simulate_dataset

    mine = tmp_path / "cls"
    shutil.copytree(tiny_classification_dir, mine)
    config = tiny(mine, tiny_regression_dir, tasks="classification", budgets="2", seeds="0")
    with monkeypatch.context() as patch:
        signal_at_cell(patch, 2)
        with pytest.raises(GridInterrupted):
            run_evaluate_stage(config)
    client = mlflow.MlflowClient()
    parent_id = client.search_runs([client.get_experiment_by_name("grid-test").experiment_id],
                                   "attributes.status = 'KILLED' and tags.`dlfm.cells` = '3'")[0].info.run_id
    with pytest.raises(ConfigError, match=r"budgets='5' \(run .*: '2'\)"):
        run_evaluate_stage(EvaluateConfig(resume=parent_id, budgets="5"))
    shutil.rmtree(mine)  # the same path now holds other images: another digest
    other = simulate_dataset(SimulationConfig(preset="model_ii", n_train=24, n_val=12, n_test=12, seed=5),
                             out_dir=tmp_path / "sim", workers=1, progress=False)
    shutil.copytree(other, mine)
    with pytest.raises(ConfigError, match=r"^resume=.*: the classification dataset .* differs from the run's \(digest"):
        run_evaluate_stage(EvaluateConfig(resume=parent_id))
    assert client.get_run(parent_id).info.status == "KILLED"  # a refusal leaves the run untouched


def start_evaluate(tmp_path, argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{REPO / '.venv' / 'bin'}:" + os.environ["PATH"]}
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leaked, None)
    return subprocess.Popen([sys.executable, *argv], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_cells(process: subprocess.Popen, n: int, timeout: float = 300) -> list[str]:
    """Read stdout until ``n`` cells have printed their line."""
    lines, deadline = [], time.time() + timeout
    while sum(line.startswith("[evaluate] ") and " seed=" in line for line in lines) < n:
        line = process.stdout.readline()
        assert line or process.poll() is None, process.stderr.read()
        assert time.time() < deadline, "cells did not finish in time"
        lines.append(line)
    return lines


def grid_params(cls_dir) -> dict:
    return {"tasks": "classification", "classification_dataset": str(cls_dir), "budgets": "2,all", "seeds": "0,1",
            "arms": "pretrained-finetune,scratch", "epochs": "2", "min_steps": "20", "batch_size": "4", "device": "cpu",
            "precision": "fp32"}


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.parametrize("launcher", ["direct", "mlflow run"])
def test_sigterm_prints_one_line_leaves_no_lock_and_resumes(launcher, production_version, tracking_uri, tmp_path,
                                                           tiny_classification_dir):
    params = grid_params(tiny_classification_dir)
    if launcher == "direct":
        argv = [str(REPO / "pipelines/evaluate.py"), "--experiment_name", "grid-test"]
        argv += [a for name, value in params.items() for a in (f"--{name}", value)]
    else:
        argv = ["-m", "mlflow", "run", str(REPO), "-e", "evaluate", "--env-manager", "local", "--experiment-name", "grid-test"]
        argv += [a for name, value in params.items() for a in ("-P", f"{name}={value}")]
    process = start_evaluate(tmp_path, argv)
    wait_for_cells(process, 2)
    process.send_signal(signal.SIGTERM)  # direct: the entry point; mlflow run: the launcher, whose death signals it
    _, stderr = process.communicate(timeout=120)
    time.sleep(3 if launcher == "mlflow run" else 0)  # the entry point outlives the launcher by its last writes
    assert "Traceback" not in stderr, stderr[-3000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("dlfm:")]
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("grid-test").experiment_id
    [parent] = [r for r in client.search_runs([experiment], "tags.`dlfm.stage` = 'evaluate'")
                if "mlflow.parentRunId" not in r.data.tags]
    parent_id = parent.info.run_id
    assert line.startswith("dlfm: interrupted: SIGTERM received; stopped with ") and line.endswith(f"-P resume={parent_id}")
    assert parent.info.status == "KILLED" and parent.data.tags[RESUME_HINT_TAG] in line
    statuses = [c.info.status for c in runs(parent_id)]
    assert statuses.count("FINISHED") >= 2 and set(statuses) <= {"FINISHED", "KILLED"} and statuses.count("KILLED") <= 1
    assert_unlocked(tracking_uri)

    done = run_script(["-m", "mlflow", "run", str(REPO), "-e", "evaluate", "--env-manager", "local",
                       "-P", f"resume={parent_id}"], cwd=tmp_path,
                      env_extra={"PATH": f"{REPO / '.venv' / 'bin'}:" + os.environ["PATH"]})
    assert done.returncode == 0, done.stderr[-3000:]
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert sum(c.info.status == "FINISHED" for c in runs(parent_id)) == 2 * 2 * 2
    assert_unlocked(tracking_uri)


@pytest.mark.slow  # a worker process: seconds of imports on top of the grid
def test_two_workers_give_the_cells_and_tables_of_one(production_version, tracking_uri, tiny_classification_dir,
                                                      tiny_regression_dir, monkeypatch):
    # The CPU thread count changes float reduction order, so both runs use one thread per process.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = tiny(tiny_classification_dir, tiny_regression_dir, tasks="classification", budgets="2", seeds="0,1")
        one = run_evaluate_stage(config)
        two = run_evaluate_stage(dataclasses.replace(config, workers=2))
    finally:
        torch.set_num_threads(threads)
    client = mlflow.MlflowClient()
    pids = {c.data.tags["dlfm.pid"] for c in runs(two["run_id"])}
    assert len(pids) == 2 and client.get_run(two["run_id"]).data.tags["dlfm.workers"] == "2"  # both processes worked
    cells = {run_id: {tuple(c.data.tags[k] for k in ("dlfm.task", "dlfm.arm", "dlfm.budget", "dlfm.seed")): c.data.metrics
                      for c in runs(run_id)} for run_id in (one["run_id"], two["run_id"])}
    assert cells[one["run_id"]].keys() == cells[two["run_id"]].keys() and len(cells[one["run_id"]]) == 6
    for key, metrics in cells[one["run_id"]].items():
        other = cells[two["run_id"]][key]
        assert {k: v for k, v in metrics.items() if k.startswith("test/")} == \
            {k: v for k, v in other.items() if k.startswith("test/")}  # bit-identical at the same thread count
    assert one["markdown"] == two["markdown"]


@pytest.mark.slow  # two torchrun processes: seconds of imports each, on top of the grid
def test_two_torchrun_ranks_on_gloo_finish_every_cell(production_version, tracking_uri, tiny_classification_dir, tmp_path):
    """The multi-node path (README: torchrun --rdzv-backend c10d) on one CPU: rank 0 opens the parent, both ranks take
    their share of the cells, rank 0 aggregates once every child run is in the store."""
    args = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(REPO / "pipelines/evaluate.py"),
            "--encoder_stage", "production", "--classification_dataset", str(tiny_classification_dir),
            "--tasks", "classification", "--budgets", "2,all", "--seeds", "0", "--arms", "pretrained-frozen,scratch",
            "--epochs", "1", "--min_steps", "2", "--batch_size", "8", "--device", "cpu", "--precision", "fp32",
            "--experiment_name", "torchrun-grid"]
    done = run_script(args, cwd=tmp_path, env_extra={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("torchrun-grid").experiment_id
    [parent] = [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED" and parent.data.tags["dlfm.workers"] == "2"
    children = runs(parent.info.run_id)
    assert len(children) == int(parent.data.tags["dlfm.cells"]) == 2 * 2  # 2 budgets x 2 arms x 1 seed
    assert all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["dlfm.pid"] for c in children}) == 2  # both ranks computed cells


def test_a_resumed_config_reads_mlflow_runs_quoted_empty_params_as_empty():
    """`mlflow run` stores an empty -P default as the shell's '' : a resume must read it back as empty."""
    from dlfm.evaluation import EvaluateConfig

    resumed = EvaluateConfig(resume="abc").resumed_from({"finetune_budgets": "''", "encoder_uri": "''", "budgets": "2,all"})
    assert resumed.finetune_budgets == "" and resumed.encoder_uri == "" and resumed.budgets == "2,all"
    resumed.validate()
