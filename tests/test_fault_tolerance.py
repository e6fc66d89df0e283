"""Crashes lose no finished epoch: per-epoch checkpoints, resume in the same run, signals, repair."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from conftest import REPO, run_script
from dlfm.errors import ConfigError
from dlfm.stages.train import run_training_stage
from dlfm.tracking import checkpoints
from dlfm.training import TrainConfig
from dlfm.training.interrupt import TrainingInterrupted


def tiny_config(dataset, **changes) -> TrainConfig:
    base = dict(objective="multitask", dataset=str(dataset), encoder="conv4", epochs=4, batch_size=8, patience=10,
                experiment_name="fault-test", checkpoint_every_s=0)
    return TrainConfig(**{**base, **changes})


def steps(client, run_id, key="train/loss_multitask") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def interrupt_after_epoch(monkeypatch, stop_epoch: int, signum=signal.SIGINT) -> None:
    """Send ourselves a real signal right after the checkpoint of ``stop_epoch`` is logged."""
    log_checkpoint = checkpoints.log_checkpoint

    def log_then_signal(state, run_id):
        path = log_checkpoint(state, run_id)
        if state["epoch"] == stop_epoch:
            os.kill(os.getpid(), signum)
        return path

    monkeypatch.setattr(checkpoints, "log_checkpoint", log_then_signal)


@pytest.mark.slow  # minutes of training in-process: run by make test, not make test-fast
def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(tracking_uri, tiny_classification_dir, monkeypatch):
    client = mlflow.MlflowClient()
    config = tiny_config(tiny_classification_dir)
    reference = run_training_stage(config, progress=False)

    with monkeypatch.context() as patch:
        interrupt_after_epoch(patch, stop_epoch=2)
        with pytest.raises(TrainingInterrupted) as raised:
            run_training_stage(config, progress=False)
    assert raised.value.last_epoch == 2 and "resume=" in raised.value.hint
    killed = client.search_runs([client.get_experiment_by_name("fault-test").experiment_id],
                                "attributes.status = 'KILLED'")[0]
    run_id = killed.info.run_id
    assert killed.data.tags[checkpoints.RESUME_HINT_TAG] == f"mlflow run . -e multitask --env-manager local -P resume={run_id}"
    assert steps(client, run_id) == [1, 2]
    local = checkpoints.local_checkpoint_path(run_id)
    state = torch.load(local, weights_only=True)  # the rule: weights-only loadable
    assert state["epoch"] == 2 and state["config"]["encoder"] == "conv4"
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "best_value", "best_epoch"} <= set(state)

    # Resume with every other field at its default: they come from the checkpoint.
    resumed = run_training_stage(TrainConfig(objective="multitask", resume=run_id), progress=False)
    assert resumed["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["dlfm.resumed_after_epoch"] == "2"
    # no stale failure left on a run that finished: the earlier reason is kept under its own name
    assert "dlfm.error" not in run.data.tags and checkpoints.RESUME_HINT_TAG not in run.data.tags
    assert run.data.tags["dlfm.earlier_error"] == "interrupted (SIGINT/SIGTERM)"
    assert steps(client, run_id) == [1, 2, 3, 4]
    for key in client.get_run(reference["run_id"]).data.metrics:
        if not key.startswith("system/"):  # no step twice, none missing: the same steps as the uninterrupted run
            assert steps(client, run_id, key) == steps(client, reference["run_id"], key), key
    assert resumed["best_epoch"] == reference["best_epoch"]
    assert resumed["metrics"].keys() == reference["metrics"].keys()
    for name, value in reference["metrics"].items():
        assert resumed["metrics"][name] == pytest.approx(value, abs=1e-6), name
    history = {m.step: m.value for m in client.get_metric_history(run_id, "train/loss_multitask")}
    expected = {m.step: m.value for m in client.get_metric_history(reference["run_id"], "train/loss_multitask")}
    assert history == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow  # minutes of training in-process: run by make test, not make test-fast
def test_refusals_leave_the_old_run_untouched(tracking_uri, tiny_classification_dir, monkeypatch):
    client = mlflow.MlflowClient()
    config = tiny_config(tiny_classification_dir, epochs=3)
    finished = run_training_stage(dataclasses.replace(config, epochs=1), progress=False)["run_id"]
    with pytest.raises(ConfigError, match="already FINISHED"):
        run_training_stage(dataclasses.replace(config, resume=finished), progress=False)
    with pytest.raises(ConfigError, match="that is a multitask run, not a supervised run"):
        run_training_stage(dataclasses.replace(config, objective="supervised", resume=finished), progress=False)
    with pytest.raises(ConfigError, match="no such run"):
        run_training_stage(dataclasses.replace(config, resume="0" * 32), progress=False)

    with monkeypatch.context() as patch:
        interrupt_after_epoch(patch, stop_epoch=1, signum=signal.SIGTERM)
        with pytest.raises(TrainingInterrupted):
            run_training_stage(config, progress=False)
    killed = client.search_runs([client.get_experiment_by_name("fault-test").experiment_id],
                                "attributes.status = 'KILLED'")[0].info.run_id
    for change, words in ((dict(lr=0.01), "lr=0.01 (checkpoint: 0.0)"), (dict(batch_size=4), "batch_size=4"),
                          (dict(epochs=2), "epochs=2 (checkpoint: 3)")):
        with pytest.raises(ConfigError, match="trained with another config") as refused:
            run_training_stage(dataclasses.replace(config, resume=killed, **change), progress=False)
        assert words in str(refused.value)
    assert client.get_run(killed).info.status == "KILLED"  # refusals happen before the run is reopened
    # epochs may grow: the schedule is stretched and training goes on to the new end.
    grown = run_training_stage(dataclasses.replace(config, resume=killed, epochs=5), progress=False)
    assert steps(client, grown["run_id"]) == [1, 2, 3, 4, 5]
    assert client.get_run(killed).data.tags["dlfm.epochs"] == "5"


def test_resume_of_another_encoder_is_refused():
    saved = tiny_config("data/x", encoder="resnet18", stem="small").to_dict()
    with pytest.raises(ConfigError, match="encoder='conv4'"):
        tiny_config("data/x", encoder="conv4", resume="abc").resumed_from(saved)


def failed_launcher_run(stage: str, experiment: str, **given) -> str:
    """A run as `mlflow run -e <stage> -P ...` leaves it when the entry point fails validation: every declared
    param logged (the given ones, the rest at their defaults), the stage tag, FAILED, no checkpoint."""
    from dlfm import project_spec
    from dlfm.entrypoint import format_default

    params = {spec.name: format_default(spec.default)
              for _, spec in project_spec.param_fields(project_spec.entry_point(stage), declared_only=True)}
    params.update({k: str(v) for k, v in given.items()})
    client = mlflow.MlflowClient()
    experiment_id = client.get_experiment_by_name(experiment) or client.create_experiment(experiment)
    experiment_id = getattr(experiment_id, "experiment_id", experiment_id)
    run = client.create_run(experiment_id, tags={"dlfm.stage": stage})
    for name, value in params.items():
        client.log_param(run.info.run_id, name, value)
    client.set_tag(run.info.run_id, "dlfm.error", "batch_size must be a positive integer")
    client.set_terminated(run.info.run_id, "FAILED")
    return run.info.run_id


def test_resume_with_no_checkpoint_uses_the_runs_own_params_never_the_defaults(tracking_uri, tiny_classification_dir):
    """Issue 33 repro 1: the resume of a run that failed validation trained the defaults (resnet18, model_ii) inside it."""
    client = mlflow.MlflowClient()
    failed = failed_launcher_run("supervised", "fault-test", dataset=tiny_classification_dir, encoder="conv4", epochs=1,
                                 batch_size=0)
    with pytest.raises(ConfigError, match="batch_size") as refused:  # its own params, refused again in one line
        run_training_stage(TrainConfig(objective="supervised", resume=failed), progress=False)
    assert "\n" not in str(refused.value)
    after = client.get_run(failed)
    assert after.info.status == "FAILED" and "dlfm.encoder" not in after.data.tags  # untouched: nothing trained in it
    assert not client.search_registered_models()
    # A run that recorded no params at all is refused, naming a fresh command.
    bare = client.create_run(client.get_experiment_by_name("fault-test").experiment_id, tags={"dlfm.stage": "supervised"})
    client.set_terminated(bare.info.run_id, "FAILED")
    with pytest.raises(ConfigError, match="did not record any params.*start a fresh run: mlflow run . -e supervised"):
        run_training_stage(TrainConfig(objective="supervised", resume=bare.info.run_id), progress=False)


@pytest.mark.slow  # trains a tiny model in-process
def test_resume_with_no_checkpoint_restarts_from_epoch_zero_with_its_own_params(tracking_uri, tiny_classification_dir,
                                                                                 capsys):
    client = mlflow.MlflowClient()
    failed = failed_launcher_run("supervised", "fault-test", dataset=tiny_classification_dir, encoder="conv4", epochs=1,
                                 batch_size=8)
    with pytest.raises(ConfigError, match="encoder='vit_tiny'"):  # a change the resume would make: refused
        run_training_stage(TrainConfig(objective="supervised", resume=failed, epochs=3, encoder="vit_tiny"), progress=False)
    result = run_training_stage(TrainConfig(objective="supervised", resume=failed), progress=False)
    assert "restarting it from epoch 0 with its own params" in capsys.readouterr().err
    run = client.get_run(failed)
    assert result["run_id"] == failed and run.info.status == "FINISHED"
    assert run.data.tags["dlfm.encoder"] == "conv4" and run.data.params["encoder"] == "conv4"
    assert steps(client, failed, "train/loss_supervised") == [1]


def test_resume_of_an_evaluate_run_that_never_started_its_grid(tracking_uri):
    """Issue 33 repro 5: KeyError 'dlfm.encoder_uri' with a traceback; now its own params, checked in one line."""
    from dlfm.errors import DlfmError
    from dlfm.evaluation import EvaluateConfig
    from dlfm.stages.evaluate import run_evaluate_stage

    client = mlflow.MlflowClient()
    invalid = failed_launcher_run("evaluate", "fault-test", encoder_uri="dlfm-encoder/1")
    with pytest.raises(ConfigError, match="encoder_uri must be a models:/"):
        run_evaluate_stage(EvaluateConfig(resume=invalid))
    assert client.get_run(invalid).info.status == "FAILED"
    valid = failed_launcher_run("evaluate", "fault-test", encoder_stage="staging")  # valid, but nothing registered
    with pytest.raises(DlfmError, match="staging") as refused:  # resolved afresh with its own params: one line
        run_evaluate_stage(EvaluateConfig(resume=valid))
    assert not isinstance(refused.value, KeyError)
    assert client.get_run(valid).info.status == "FAILED"


# ---------------------------------------------------------------- real processes and signals


def start_training(tmp_path: Path, dataset: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leaked, None)
    args = ["--dataset", str(dataset), "--encoder", "conv4", "--epochs", "8", "--batch_size", "4", "--patience", "100",
            "--experiment_name", "fault-test", "--checkpoint_every_s", "0", *extra]
    return subprocess.Popen([sys.executable, str(REPO / "pipelines/multitask.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(tmp_path: Path, process: subprocess.Popen, timeout: float = 240) -> str:
    """The run id, once the first epoch's checkpoint is on disk."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list((tmp_path / "checkpoints").glob("*/last.pt"))
        if found:
            return found[0].parent.name
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    process.kill()
    raise AssertionError("no checkpoint appeared")


def resume_in_subprocess(tmp_path, dataset, run_id):
    return run_script([str(REPO / "pipelines/multitask.py"), "--dataset", str(dataset), "--resume", run_id],
                      cwd=tmp_path)


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_sigterm_ends_the_run_killed_with_a_hint_then_it_resumes(tracking_uri, tiny_classification_dir, tmp_path):
    process = start_training(tmp_path, tiny_classification_dir)
    run_id = wait_for_checkpoint(tmp_path, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("dlfm:")]
    assert line.startswith("dlfm: interrupted: SIGTERM received") and f"-P resume={run_id}" in line
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[checkpoints.RESUME_HINT_TAG].endswith(f"-e multitask --env-manager local -P resume={run_id}")
    done = steps(client, run_id)
    assert done == list(range(1, len(done) + 1)) and len(done) < 8

    # As a user would: through the MLproject, every other param at its default (taken from the checkpoint).
    result = run_script(["-m", "mlflow", "run", str(REPO), "-e", "multitask", "--env-manager", "local",
                         "-P", f"resume={run_id}", "-P", f"dataset={tiny_classification_dir}"], cwd=tmp_path,
                        env_extra={"PATH": f"{REPO / '.venv' / 'bin'}:" + os.environ["PATH"]})
    assert result.returncode == 0, result.stderr[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["dlfm.resumed_after_epoch"] == str(len(done))
    assert steps(client, run_id) == list(range(1, 9))
    from mlflow.entities import ViewType

    launchers = client.search_runs([e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)],
                                   f"tags.`dlfm.resumed_run` = '{run_id}'")
    assert [r.info.status for r in launchers] == ["FINISHED"]  # mlflow run's empty launcher run, ended at once


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_sigterm_twice_during_a_resumed_run_ends_it_killed_with_the_hint_and_no_lock(tracking_uri, tiny_classification_dir,
                                                                                     tmp_path):
    """Issue 33 repro 7: a duplicate SIGTERM landed in the KILLED cleanup of a resumed run ("database is locked",
    a second KeyboardInterrupt, the run left RUNNING and SQLite's write lock held)."""
    process = start_training(tmp_path, tiny_classification_dir)
    run_id = wait_for_checkpoint(tmp_path, process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "KILLED"

    resumed = start_training(tmp_path, tiny_classification_dir, "--resume", run_id)
    deadline = time.time() + 240
    while client.get_run(run_id).info.status != "RUNNING":  # reopened: the resume's store writes begin
        assert resumed.poll() is None and time.time() < deadline, resumed.communicate()
        time.sleep(0.05)
    resumed.send_signal(signal.SIGTERM)  # the group's signal, then the launcher's death signal a moment later
    time.sleep(0.3)
    resumed.send_signal(signal.SIGTERM)
    time.sleep(1.2)
    if resumed.poll() is None:  # a straggler after the loop has handled the stop: the cleanup must not be cut
        resumed.send_signal(signal.SIGTERM)
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-3000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("dlfm:")]
    assert line.startswith("dlfm: interrupted") and f"-P resume={run_id}" in line
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags[checkpoints.RESUME_HINT_TAG].endswith(f"-P resume={run_id}")
    import sqlite3

    store = sqlite3.connect(tracking_uri.removeprefix("sqlite:///"), timeout=0.5)  # no lock left behind
    store.execute("BEGIN IMMEDIATE")
    store.rollback()
    store.close()


@pytest.mark.slow  # a real subprocess killed by a real signal, then two CLI processes: run by make test, not make test-fast
def test_sigkill_mid_epoch_then_repair_then_resume(tracking_uri, tiny_classification_dir, tmp_path):
    process = start_training(tmp_path, tiny_classification_dir)
    run_id = wait_for_checkpoint(tmp_path, process)
    time.sleep(0.3)  # into the next epoch
    process.kill()
    process.communicate(timeout=60)
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "RUNNING"  # what a SIGKILL leaves behind
    completed = checkpoints.load_checkpoint(run_id)["epoch"]

    dry = run_script(["-m", "dlfm.cli", "runs", "repair", "--stale-after", "0", "--dry-run"], cwd=tmp_path)
    assert dry.returncode == 0 and f"would mark FAILED: run {run_id}" in dry.stdout, dry.stdout + dry.stderr
    assert client.get_run(run_id).info.status == "RUNNING"
    repaired = run_script(["-m", "dlfm.cli", "runs", "repair", "--stale-after", "0", "--experiment-name", "fault-test"],
                          cwd=tmp_path)
    assert repaired.returncode == 0 and f"marked FAILED: run {run_id}" in repaired.stdout, repaired.stdout + repaired.stderr
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and "is gone" in run.data.tags["dlfm.error"]

    result = resume_in_subprocess(tmp_path, tiny_classification_dir, run_id)
    assert result.returncode == 0, result.stderr[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["dlfm.resumed_after_epoch"] == str(completed)
    assert steps(client, run_id) == list(range(1, 9))


def test_repair_leaves_live_and_recent_runs_alone(tracking_uri):
    from dlfm.tracking import stage_run
    from dlfm.tracking.maintenance import find_dead_runs

    with stage_run("multitask", "alive", "fault-test", system_metrics=False) as alive_id:
        client = mlflow.MlflowClient()
        other = client.create_run(client.get_experiment_by_name("fault-test").experiment_id,
                                  tags={"dlfm.pid": "1", "dlfm.host": "elsewhere"})
        verdicts = {v.run_id: v for v in find_dead_runs("fault-test", stale_after=0, other_host_stale_after=3600)}
        assert verdicts[alive_id].verdict == "alive"
        assert verdicts[other.info.run_id].verdict == "unknown"  # another host, silent for less than an hour
        verdicts = {v.run_id: v for v in find_dead_runs("fault-test", stale_after=0, other_host_stale_after=0)}
        assert verdicts[other.info.run_id].verdict == "dead" and verdicts[alive_id].verdict == "alive"
        client.set_terminated(other.info.run_id, "FAILED")


# ---------------------------------------------------------------- concurrent registry writes

REGISTER_AND_PROMOTE = """
import sys, time
from pathlib import Path
import mlflow, torch
from dlfm.entrypoint import run_entry_point
from dlfm.models import create_encoder
from dlfm.tracking import registry, stage_run

def main():
    go = Path(sys.argv[1])
    torch.manual_seed(int(sys.argv[2]))
    encoder = create_encoder("conv4")
    while not go.exists():  # both processes are imported and ready: start together
        time.sleep(0.01)
    with stage_run("multitask", "multitask-race", "race", system_metrics=False) as run_id:
        metrics = {"val/macro_auc": 0.5 + int(sys.argv[2]) / 10}
        mlflow.log_metrics(metrics)
        version = registry.register_encoder_version(encoder, 64, "multitask", metrics, "f" * 64, run_id)
    print("promoted" if registry.promote(version, "production", reason=f"race {sys.argv[2]}").promoted else "kept", version)

run_entry_point(main)
"""


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_two_processes_register_and_promote_at_once(tracking_uri, tmp_path):
    from dlfm.tracking import registry

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    go = tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", REGISTER_AND_PROMOTE, str(go), str(seed)], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    time.sleep(8)  # let both import torch and mlflow
    go.touch()
    outputs = [worker.communicate(timeout=300) for worker in workers]
    codes = [worker.returncode for worker in workers]
    for code, (stdout, stderr) in zip(codes, outputs):
        assert "Traceback" not in stderr, stderr[-3000:]
        if code != 0:  # allowed: one fails cleanly, with one line
            assert code == 2 and [l for l in stderr.splitlines() if l.startswith("dlfm: error:")], stderr[-3000:]
    assert 0 in codes
    versions = [stdout.split()[-1] for code, (stdout, _) in zip(codes, outputs) if code == 0]
    assert len(set(versions)) == len(versions)  # distinct versions
    registered = {v.version for v in registry.list_versions()}
    assert set(versions) <= registered
    history = registry.promotion_history("production")
    assert len(history) == len(versions) and {h["version"] for h in history} == set(versions)
    holder = registry.version_for_stage("production")
    assert holder == history[-1]["version"] and holder in versions  # the alias agrees with the last record
    assert [h["previous_version"] for h in history] == ["", *[h["version"] for h in history[:-1]]]
    assert registry.version_for_stage("candidate") in registered
