"""benchmarks/pretrain_seeds_table.py: main's numbers over pretraining-corpus seeds, read from real MLflow runs."""

from __future__ import annotations

import importlib.util
import time

import mlflow
import pytest

from conftest import REPO


def load_table_module():
    spec = importlib.util.spec_from_file_location("pretrain_seeds_table", REPO / "benchmarks" / "pretrain_seeds_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log_main(client, experiment_id: str, seed: int, probe: float, verdict: float, status: str = "FINISHED") -> None:
    run = client.create_run(experiment_id, tags={"dlfm.stage": "main"})
    client.log_param(run.info.run_id, "pretrain_seed", str(seed))
    client.log_metric(run.info.run_id, "autoencoder/val_probe_macro_auc", probe)
    client.log_metric(run.info.run_id, "evaluate/verdict_diff_classification_10_pretrained-frozen-vs-random-frozen", verdict)
    client.set_terminated(run.info.run_id, status)
    time.sleep(0.01)  # distinct start times: the newest run of a seed wins


def test_one_row_per_seed_then_the_spread_over_seeds(tracking_uri, capsys):
    table_module = load_table_module()
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("seeds")
    log_main(client, experiment_id, 1000, 0.50, 0.90)  # superseded by the next run of seed 1000
    log_main(client, experiment_id, 1000, 0.92, 0.10)
    log_main(client, experiment_id, 2000, 0.93, 0.08)
    log_main(client, experiment_id, 3000, 0.93, 0.03)
    log_main(client, experiment_id, 4000, 0.10, 0.50, status="FAILED")  # not a result

    rows = table_module.runs_by_seed("seeds")
    assert list(rows) == ["1000", "2000", "3000"] and rows["1000"]["autoencoder/val_probe_macro_auc"] == 0.92
    table_module.main(["--experiment", "seeds"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| pretrain_seed | autoencoder probe | classification 10: pretrained-frozen − random-frozen |"
    assert lines[-2] == "| mean ± sd (3 seeds) | +0.9267 ± 0.0058 | +0.0700 ± 0.0361 |"
    low, high = (float(x) for x in lines[-1].split("| ")[-1].strip(" |[]").split(", "))
    assert low < 0 < high  # three seeds of +0.10, +0.08, +0.03: the t interval reaches 0
    with pytest.raises(SystemExit, match="no experiment 'nope'"):
        table_module.main(["--experiment", "nope"])


def test_the_script_runs_main_once_per_seed_with_the_extra_params(tmp_path):
    """benchmarks/pretrain_seeds.sh with stand-in ``dlfm`` and ``python`` commands that record their arguments."""
    import os
    import stat
    import subprocess

    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in ("python", "dlfm"):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 0\n')
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SEEDS": "7 8", "EXTRA": "-P device=cpu -P epochs=1",
           "EXPERIMENT": "seeds-test"}
    subprocess.run(["bash", str(REPO / "benchmarks" / "pretrain_seeds.sh")], env=env, check=True, capture_output=True, timeout=60)
    calls = log.read_text().splitlines()
    mains = [call for call in calls if call.startswith("dlfm run . -e main")]
    assert len(mains) == 2 and all("--experiment-name seeds-test" in call and "-P device=cpu -P epochs=1" in call
                                   for call in mains)
    assert ["-P pretrain_seed=7" in mains[0], "-P pretrain_seed=8" in mains[1]] == [True, True]
    assert calls[-1] == "python benchmarks/pretrain_seeds_table.py --experiment seeds-test"
