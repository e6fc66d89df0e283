"""Entry points end to end on tiny data: FINISHED runs with the shared metric names, figures and encoder/."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch

from conftest import REPO, run_script
from dlfm.models.serialization import load_encoder
from dlfm.objectives import OBJECTIVES
from dlfm.stages.train import run_training_stage
from dlfm.training import TrainConfig


def only_run(client, stage):
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], f"tags.`dlfm.stage` = '{stage}'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def test_the_resolved_device_is_named_in_one_line():
    from types import SimpleNamespace

    from dlfm.stages.common import device_line

    cpu = SimpleNamespace(device=torch.device("cpu"), amp_dtype="fp32", world_size=1)
    assert device_line(cpu, "auto") == "dlfm: device cpu (no CUDA GPU found, fp32)"
    assert device_line(cpu, "cpu") == "dlfm: device cpu (as requested, fp32)"
    ranks = SimpleNamespace(device=torch.device("cpu"), amp_dtype="bf16", world_size=2)
    assert device_line(ranks, "cpu") == "dlfm: device cpu (as requested, bf16, 2 processes)"


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_training_stage_smoke(objective, tracking_uri, tiny_classification_dir, tmp_path, capsys):
    config = TrainConfig(objective=objective, dataset=str(tiny_classification_dir), encoder="conv4", epochs=2, batch_size=8)
    summary = run_training_stage(config, progress=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"dlfm: device {device} (" in capsys.readouterr().out.splitlines()[0], "the device is named at the start"
    client = mlflow.MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["dlfm.stage"] == objective and run.data.tags["dlfm.objective"] == objective
    assert run.data.tags["dlfm.encoder"] == "conv4"
    metrics = run.data.metrics
    for name in (f"train/loss_{objective}", f"val/loss_{objective}", "val/accuracy", "val/macro_auc", "val/auc_no_sub",
                 "val/auc_cdm", "val/auc_axion", "test/accuracy", "test/macro_auc"):
        assert name in metrics, name
    assert not {"train/loss", "val/loss", "test/loss"} & set(metrics)  # a bare total would mean another thing per stage
    spec = OBJECTIVES[objective]
    assert ("val/recon_mse" in metrics) == (spec.recon_metric == "recon_mse")
    assert ("train/recon_mse" in metrics) == ("recon" in spec.parts)  # the train part has the val metric's name
    assert len(client.get_metric_history(run.info.run_id, f"train/loss_{objective}")) == 2
    # Per-epoch validation is a curve of its own; val/… and test/… are the best weights' values, logged once
    # (for probed objectives too), so they are never a dot beside a curve nor on the last epoch's step.
    assert [m.step for m in client.get_metric_history(run.info.run_id, f"val_epoch/{spec.monitor[0][4:]}")] == [1, 2]
    for name in ("val/macro_auc", "test/macro_auc", spec.monitor[0]):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [0], name
    # The logged model has a per-stage name and its metrics are linked to it, so logged-model search ranks encoders.
    found = mlflow.search_logged_models(filter_string="metrics.`val/macro_auc` >= 0", output_format="list")
    [model] = [m for m in found if m.source_run_id == run.info.run_id]
    assert model.name == f"encoder-{objective}"
    assert {m.key for m in model.metrics} >= {"val/macro_auc", "test/macro_auc"}
    # The run explains itself: a description with what it trained and the headline result.
    note = run.data.tags["mlflow.note.content"]
    assert objective in note and "val/macro_auc" in note and f"version {summary['version']}" in note
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "deeplense-fm" and "dlfm" in experiment.tags["mlflow.note.content"]
    assert "UTC" in run.data.tags["dlfm.started_at"]  # readable, not an epoch float
    assert run.data.params["recon_weight"] == "1.0" and run.data.params["epochs"] == "2"  # the config is logged whole
    figures = {f.path for f in client.list_artifacts(run.info.run_id, "figures")}
    expected = {"figures/learning_curves.png", "figures/roc.png", "figures/confusion.png"}
    if spec.decodes:
        expected.add("figures/reconstructions.png")
    assert expected <= figures
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="encoder", dst_path=str(tmp_path))
    encoder = load_encoder(local)
    assert encoder(torch.rand(2, 1, 64, 64)).shape == (2, 128)
    assert json.loads((tmp_path / "encoder" / "arch.json").read_text())["objective"] == objective
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.digest


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_simulate_entry_point_through_mlflow_run(tracking_uri, tmp_path):
    out = tmp_path / "data"
    result = run_script(["-m", "mlflow", "run", str(REPO), "-e", "simulate", "--env-manager", "local",
                         "--experiment-name", "sim-test", "-P", "n_train=6", "-P", "n_val=3", "-P", "n_test=3",
                         "-P", "workers=1", "-P", f"out_dir={out}"], cwd=tmp_path,
                        env_extra={"PATH": f"{REPO / '.venv' / 'bin'}:" + __import__("os").environ["PATH"]})
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient()
    run = only_run(client, "simulate")
    assert run.info.status == "FINISHED"
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)} | {
        f.path for f in client.list_artifacts(run.info.run_id, "figures")}
    assert {"manifest.json", "figures/examples.png"} <= artifacts
    [dataset_input] = run.inputs.dataset_inputs
    assert str(out) in dataset_input.dataset.source
    assert dataset_input.dataset.digest
    assert len(list(out.iterdir())) == 1


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "epochs must be a positive integer"),
    # One process start costs seconds: the fast lane keeps the first case, `make test` runs them all.
    pytest.param(["--epochs", "three"], "epochs must be an integer", marks=pytest.mark.slow),
    pytest.param(["--encoder", "vgg99"], "unknown encoder", marks=pytest.mark.slow),
    pytest.param(["--recon_weight", "-1"], "recon_weight must be >= 0", marks=pytest.mark.slow),
    pytest.param(["--dataset", "/nonexistent/lenses"], "neither a preset", marks=pytest.mark.slow),
    pytest.param(["--device", "cuda"], "no CUDA GPU", marks=pytest.mark.slow),
])
def test_bad_training_input_gives_one_line_and_a_failed_run(args, message, tracking_uri, tiny_classification_dir, tmp_path):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    base = ["--dataset", str(tiny_classification_dir), "--encoder", "conv4", "--epochs", "1"]
    result = run_script([str(REPO / "pipelines/multitask.py"), *base, *args], cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("dlfm: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    client = mlflow.MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert all(r.info.status == "FAILED" for r in runs)
    assert all(message in r.data.tags.get("dlfm.error", "") for r in runs if "three" not in args)


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_image_size_the_encoder_cannot_take(tracking_uri, tmp_path):
    import numpy as np

    folder = tmp_path / "tiny_images"
    for cls in ("no", "sphere", "vort"):
        (folder / cls).mkdir(parents=True)
        for i in range(4):
            np.save(folder / cls / f"{i}.npy", np.random.rand(1, 16, 16).astype("float32"))
    result = run_script([str(REPO / "pipelines/supervised.py"), "--dataset", str(folder), "--epochs", "1"], cwd=tmp_path)
    assert result.returncode == 2 and "at least 32 px" in result.stderr and "Traceback" not in result.stderr


def test_runs_land_where_mlflow_users_expect(tracking_uri, monkeypatch):
    """No param claims an experiment the run is not in: mlflow run's experiment wins, a disagreeing param is refused."""
    from dlfm.errors import DlfmError
    from dlfm.tracking import resolve_experiment_name, stage_run

    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert resolve_experiment_name("") == "deeplense-fm"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    assert resolve_experiment_name("") == "mine" and resolve_experiment_name("given") == "given"
    client = mlflow.MlflowClient()
    launched = client.create_run(client.create_experiment("filed-by-mlflow-run")).info.run_id  # what `mlflow run` makes
    monkeypatch.setenv("MLFLOW_RUN_ID", launched)
    with pytest.raises(DlfmError, match="mlflow run filed this run under experiment 'filed-by-mlflow-run'"):
        with stage_run("simulate", "simulate-x", "elsewhere", system_metrics=False):
            pass
    with stage_run("simulate", "simulate-x", "", system_metrics=False) as run_id:
        mlflow.log_params({"experiment_name_absent": "yes"})
    run = client.get_run(run_id)
    assert run_id == launched and "experiment_name" not in run.data.params


def test_every_epoch_prints_a_line_that_stays_when_piped(capsys):
    import sys

    from dlfm.training.loop import fit
    from test_training import CLASSES, random_splits

    assert not sys.stdout.isatty()  # captured, as under CI, tee or nohup
    fit(TrainConfig(objective="multitask", encoder="conv4", epochs=2, batch_size=8), random_splits(), CLASSES, progress=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2") and lines[1].startswith("epoch 2/2")
    assert "train/loss_multitask" in lines[0] and "val/macro_auc" in lines[0] and "ETA" in lines[0]
