"""The tune stage: Optuna trials as MLflow child runs, pruning, failures, workers, stale-trial retries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow import MlflowClient

from conftest import REPO, run_script
from dlfm.errors import ConfigError
from dlfm.training import TrainConfig
from dlfm.tune import TuneConfig, make_pruner, mask_password, search_space
from dlfm.tune.storage import postgres_driver

TINY = dict(objective="multitask", encoder="conv4", epochs=2, batch_size=8, patience=10, device="cpu")


def tune_config(dataset, storage, study_name="s", **changes) -> TuneConfig:
    train = {k: changes.pop(k) for k in list(changes) if k in TrainConfig.field_names()}
    return TuneConfig(train=TrainConfig(**{**TINY, "dataset": str(dataset), **train}), storage=storage,
                      study_name=study_name, **{"n_trials": 3, "pruner": "none", **changes})


def runs_of(parent_run_id: str) -> tuple:
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return parent, children


def assert_children_match_storage(children, study: optuna.Study) -> None:
    """One child run per trial, no trial lost or duplicated, states equal to Optuna's."""
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    by_number = {int(run.data.tags["dlfm.trial_number"]): run for run in children}
    assert len(by_number) == len(children) == len(trials)
    for trial in trials:
        run = by_number[trial.number]
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert run.data.tags["dlfm.trial_state"] == trial.state.name
        assert run.info.status == ("FAILED" if trial.state.name == "FAIL" else "FINISHED")
        assert float(run.data.params["recon_weight"]) == pytest.approx(trial.params["recon_weight"])
        assert len(trial.intermediate_values) >= 1
        history = MlflowClient().get_metric_history(run.info.run_id, "val_epoch/macro_auc")  # the per-epoch curve
        assert {m.step for m in history} >= set(trial.intermediate_values)


# ---------------------------------------------------------------- pure pieces


def test_search_space_covers_recon_weight_and_optionally_lr():
    base = TrainConfig(objective="multitask", lr=2e-3)
    config = search_space(optuna.trial.FixedTrial({"recon_weight": 0.05}), base, tune_lr=False)
    assert (config.recon_weight, config.lr, config.objective) == (0.05, 2e-3, "multitask")
    config = search_space(optuna.trial.FixedTrial({"recon_weight": 3.0, "lr": 1e-2}), base, tune_lr=True)
    assert (config.recon_weight, config.lr) == (3.0, 1e-2)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        config = search_space(trial, base, tune_lr=True)
        assert 1e-3 <= config.recon_weight <= 10 and 2e-4 <= config.lr <= 2e-2
        study.tell(trial, 0.5)


def test_search_spaces_are_one_row_per_objective():
    from dlfm.tune.space import SEARCH_SPACES

    config = search_space(optuna.trial.FixedTrial({"mask_ratio": 0.9}), TrainConfig(objective="mae", encoder="vit_tiny"),
                          tune_lr=False)
    assert (config.objective, config.mask_ratio, config.encoder) == ("mae", 0.9, "vit_tiny")
    assert SEARCH_SPACES["mae"].bounds == (0.5, 0.95) and SEARCH_SPACES["mae"].epoch_score is None  # a probe: after training
    for objective, space in SEARCH_SPACES.items():
        TuneConfig(train=TrainConfig(objective=objective, encoder="vit_tiny"), objective=objective).validate()
        assert space.param in TrainConfig.field_names() and space.score == "val/macro_auc"
    with pytest.raises(ConfigError, match="tune searches the objectives multitask, mae, got objective='supervised'"):
        TuneConfig(train=TrainConfig(objective="supervised"), objective="supervised").validate()
    with pytest.raises(ConfigError, match="drop pretrain_dataset"):
        TuneConfig(train=TrainConfig(objective="mae", pretrain_dataset="pretrain"), objective="mae").validate()
    mae = TuneConfig(train=TrainConfig(objective="mae", encoder="conv4", epochs=3), objective="mae")
    assert mae.resolved_study_name().startswith("tune-mae-conv4-model_ii-3ep-")
    # the searched mask_ratio does not split the study; the multitask study names are what they were
    assert mae.resolved_study_name() == TuneConfig(train=TrainConfig(objective="mae", encoder="conv4", epochs=3,
                                                                     mask_ratio=0.6), objective="mae").resolved_study_name()


def test_pruner_choices_and_password_masking():
    base = TuneConfig(train=TrainConfig(objective="multitask"))
    assert isinstance(make_pruner(base), optuna.pruners.NopPruner)  # the default (benchmarks/tune_pruning.py)
    assert isinstance(make_pruner(TuneConfig(train=base.train, pruner="median")), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner(TuneConfig(train=base.train, pruner="hyperband")), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner(TuneConfig(train=base.train, pruner="none")), optuna.pruners.NopPruner)
    assert mask_password("postgresql://ana:s3cr@t@db:5432/optuna") == "postgresql://ana:***@db:5432/optuna"
    assert mask_password("postgresql+psycopg2://ana@db/optuna") == "postgresql+psycopg2://ana@db/optuna"
    assert mask_password("sqlite:///mlruns/optuna.db") == "sqlite:///mlruns/optuna.db"


@pytest.mark.parametrize("changes, message", [
    ({"n_trials": 0}, "n_trials must be a positive integer"),
    ({"n_workers": 0}, "n_workers must be a positive integer"),
    ({"pruner": "asha"}, "unknown pruner 'asha'"),
    ({"storage": "optuna.db"}, "storage must be an Optuna RDB URL"),
    ({"grace_period": 1, "heartbeat_interval": 5}, "grace_period"),
])
def test_bad_params_are_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        TuneConfig(train=TrainConfig(objective="multitask"), **changes).validate()


def test_auto_study_name_follows_the_trial_settings():
    base = TuneConfig(train=TrainConfig(objective="multitask"))
    same = TuneConfig(train=TrainConfig(objective="multitask", device="cpu", experiment_name="x"), n_trials=40)
    other = TuneConfig(train=TrainConfig(objective="multitask", epochs=9))
    assert base.resolved_study_name() == same.resolved_study_name() != other.resolved_study_name()
    assert TuneConfig(train=base.train, study_name="fm-v1").resolved_study_name() == "fm-v1"
    # trials read one dataset, at one scale: pixel_scale=auto is native there, so studies begun at 0.0 keep their names
    native = TuneConfig(train=TrainConfig(objective="multitask", pixel_scale=0.0))
    finer = TuneConfig(train=TrainConfig(objective="multitask", pixel_scale=0.08))
    assert base.resolved_study_name() == native.resolved_study_name() != finer.resolved_study_name()
    # Readable, so optuna-dashboard tells studies apart: encoder, dataset and epochs before the digest.
    named = TuneConfig(train=TrainConfig(objective="multitask", encoder="conv4", dataset="data/model_ii-abc", epochs=3))
    assert named.resolved_study_name().startswith("tune-conv4-model_ii-abc-3ep-")


# ---------------------------------------------------------------- one process


@pytest.mark.slow  # minutes of training in-process: run by make test, not make test-fast
def test_mae_study_searches_the_mask_ratio_and_scores_the_probe(tracking_uri, tiny_classification_dir, tmp_path, capsys):
    from dlfm.stages.tune import run_tune_stage
    from dlfm.tracking.registry import get_version

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    train = TrainConfig(**{**TINY, "objective": "mae", "epochs": 1, "dataset": str(tiny_classification_dir)})
    config = TuneConfig(train=train, objective="mae", storage=storage, study_name="masks", n_trials=2, pruner="median")
    summary = run_tune_stage(config)
    study = optuna.load_study(study_name="masks", storage=storage)
    parent, children = runs_of(summary["run_id"])
    assert len(children) == 2 and all(0.5 <= t.params["mask_ratio"] <= 0.95 for t in study.trials)
    assert all(t.intermediate_values == {} for t in study.trials)  # the probe score exists only after training
    for child in children:
        assert child.data.tags["dlfm.objective"] == "mae"
        assert {"val/macro_auc", "val/masked_mse"} <= set(child.data.metrics)  # the score, the reconstruction beside
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert "figures/optuna_mask_ratio.png" in {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "figures")}
    assert get_version(summary["version"]).tags["objective"] == "mae"
    assert "val/masked_mse" in capsys.readouterr().out  # each trial's line shows the reconstruction cost


@pytest.mark.slow  # minutes of training in-process: run by make test, not make test-fast
def test_three_trial_study_gives_parent_children_and_a_registered_encoder(tracking_uri, tiny_classification_dir, tmp_path,
                                                                         capsys):
    from dlfm.stages.tune import run_tune_stage
    from dlfm.tracking.registry import get_version

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    summary = run_tune_stage(tune_config(tiny_classification_dir, storage, "three"))
    study = optuna.load_study(study_name="three", storage=storage)
    parent, children = runs_of(summary["run_id"])
    assert parent.data.tags["dlfm.stage"] == "tune" and parent.info.status == "FINISHED"
    assert_children_match_storage(children, study)
    assert len(children) == 3 and {c.data.tags["dlfm.stage"] for c in children} == {"tune"}
    assert float(parent.data.params["best_recon_weight"]) == pytest.approx(study.best_params["recon_weight"])
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.metrics["val/macro_auc"] == pytest.approx(study.best_value)
    assert parent.data.params["study_name"] == "three" and parent.data.params["storage"] == storage
    artifacts = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "figures")}
    assert artifacts == {"figures/optuna_history.png", "figures/optuna_recon_weight.png", "figures/optuna_intermediate.png"}
    version = get_version(summary["version"])
    assert version.run_id == parent.info.run_id and version.tags["objective"] == "multitask"
    # label provenance: the best trial trained on the set's train labels and was chosen on its val labels
    assert version.tags["dlfm.label_count"] == "24" and version.tags["dlfm.label_selection"] == "12 val labels"
    best_child = parent.data.tags["dlfm.best_trial_run_id"]
    assert best_child == study.best_trial.user_attrs["mlflow_run_id"]
    assert "encoder" in {a.path for a in MlflowClient().list_artifacts(best_child)}
    # The study carries its context for optuna-dashboard; the terminal got one line per trial.
    assert study.metric_names == ["val/macro_auc"]
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert study.user_attrs["dataset_digest"] == parent.data.tags["dlfm.dataset_digest"] and study.user_attrs["encoder"]
    trial_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[tune] trial ")]
    assert len(trial_lines) == 3 and all(any(s in line for s in ("COMPLETE", "PRUNED", "FAIL")) for line in trial_lines)
    assert "best" in parent.data.tags["mlflow.note.content"]

    # Rerunning the same command joins the study and finds nothing left to do.
    again = run_tune_stage(tune_config(tiny_classification_dir, storage, "three"))
    assert len(study.get_trials()) == 3 and again["best_trial"] == summary["best_trial"]
    assert runs_of(again["run_id"])[1] == []
    # ... and registers nothing new: one study's best trial is one version, however many runs finish the study
    from dlfm.tracking.registry import list_versions

    assert again["version"] == summary["version"] and len(list_versions()) == 1


@pytest.mark.slow  # minutes of training in-process: run by make test, not make test-fast
def test_aggressive_median_pruning_prunes(tracking_uri, tiny_classification_dir, tmp_path):
    from dlfm.stages.tune import run_tune_stage

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # Three epochs, so a trial the median pruner stops before its last epoch saves work (with two, the tiny
    # data's epoch-1 AUCs can tie the median, which never prunes, and only last-epoch pruning is left).
    config = tune_config(tiny_classification_dir, storage, "prune", n_trials=5, epochs=3, pruner="median",
                         prune_startup_trials=1, prune_warmup_epochs=0)
    summary = run_tune_stage(config)
    study = optuna.load_study(study_name="prune", storage=storage)
    pruned = [t for t in study.get_trials() if t.state.name == "PRUNED"]
    assert pruned and summary["states"]["PRUNED"] == len(pruned)
    assert_children_match_storage(runs_of(summary["run_id"])[1], study)
    assert summary["epochs_spent"] < 5 * 3


def test_a_raising_trial_is_recorded_fail_and_the_study_goes_on(tracking_uri, tiny_classification_dir, tmp_path, monkeypatch):
    from dlfm.stages.tune import run_tune_stage
    from dlfm.training.epoch import NonFiniteLossError
    from dlfm.tune import trials as search  # where the trial objective calls fit

    calls = []

    def fit_with_one_blow_up(config, splits, class_names, on_epoch_end=None, **kwargs):
        calls.append(config.recon_weight)
        if len(calls) == 2:  # the second trial's loss turns NaN in its first epoch
            raise NonFiniteLossError("training loss became nan at epoch 1; lower lr or recon_weight")
        return real_fit(config, splits, class_names, on_epoch_end=on_epoch_end, **kwargs)

    real_fit = search.fit
    monkeypatch.setattr(search, "fit", fit_with_one_blow_up)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    summary = run_tune_stage(tune_config(tiny_classification_dir, storage, "fail", epochs=1))
    study = optuna.load_study(study_name="fail", storage=storage)
    states = [t.state.name for t in study.get_trials()]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]
    failed = study.trials[1]
    assert failed.user_attrs["fail_reason"].startswith("NonFiniteLossError: training loss became nan")
    child = MlflowClient().get_run(failed.user_attrs["mlflow_run_id"])
    assert child.info.status == "FAILED" and child.data.tags["dlfm.trial_state"] == "FAIL"
    assert "loss became nan" in child.data.tags["dlfm.fail_reason"]
    assert summary["states"] == {"COMPLETE": 2, "FAIL": 1}


# ---------------------------------------------------------------- workers and storages


def run_two_workers(dataset, storage: str, study_name: str):
    from dlfm.stages.tune import run_tune_stage

    summary = run_tune_stage(tune_config(dataset, storage, study_name, n_trials=4, n_workers=2, epochs=1))
    study = optuna.load_study(study_name=study_name, storage=postgres_driver(storage))
    assert summary["failed_workers"] == []
    assert sorted(t.number for t in study.get_trials()) == [0, 1, 2, 3]
    children = runs_of(summary["run_id"])[1]
    assert_children_match_storage(children, study)
    assert len({c.data.tags["dlfm.pid"] for c in children}) == 2  # both workers ran trials
    return study


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_two_workers_share_one_sqlite_study(tracking_uri, tiny_classification_dir, tmp_path):
    run_two_workers(tiny_classification_dir, f"sqlite:///{tmp_path / 'optuna.db'}", "sqlite-workers")


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
@pytest.mark.services
def test_two_workers_share_one_postgresql_study(tracking_uri, tiny_classification_dir, postgres_storage):
    run_two_workers(tiny_classification_dir, postgres_storage, "pg-workers")


@pytest.mark.slow  # a real subprocess, server or signal: run by make test, not make test-fast
def test_a_killed_workers_trial_is_retried(tracking_uri, tiny_classification_dir, tmp_path):
    """SIGKILL a tune process mid-trial; the next tune run fails the stale trial and reruns its params."""
    from dlfm.stages.tune import run_tune_stage

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_RUN_ID", None)
    args = ["--dataset", str(tiny_classification_dir), "--encoder", "conv4", "--batch_size", "8", "--epochs", "1000",
            "--patience", "1000", "--device", "cpu", "--n_trials", "1", "--pruner", "none", "--storage", storage,
            "--study_name", "killed", "--heartbeat_interval", "1", "--grace_period", "2"]
    victim = subprocess.Popen([sys.executable, str(REPO / "pipelines/tune.py"), *args], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until the trial is running and has reported an epoch
            try:
                trials = optuna.load_study(study_name="killed", storage=storage).get_trials()
            except KeyError:
                trials = []
            if trials and trials[0].intermediate_values:
                break
            assert victim.poll() is None, victim.stderr.read()
            time.sleep(0.5)
        else:
            pytest.fail("the tune process never started its trial")
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    dead = optuna.load_study(study_name="killed", storage=storage).trials[0]
    assert dead.state.name == "RUNNING"
    time.sleep(3)  # > grace_period: the dead trial's heartbeat is now stale

    summary = run_tune_stage(tune_config(tiny_classification_dir, storage, "killed", n_trials=1, epochs=1,
                                         heartbeat_interval=1, grace_period=2))
    trials = optuna.load_study(study_name="killed", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == dead.params
    assert summary["best_trial"] == 1
    orphan = MlflowClient().get_run(dead.user_attrs["mlflow_run_id"])
    assert orphan.info.status == "FAILED" and "heartbeats" in orphan.data.tags["dlfm.error"]
    child = runs_of(summary["run_id"])[1]
    assert len(child) == 1 and child[0].data.tags["dlfm.retry_of_trial"] == "0"


# ---------------------------------------------------------------- the entry point


@pytest.mark.parametrize("args, message", [
    # One process start costs seconds: the fast lane keeps the storage case, `make test` runs them all.
    pytest.param(["--n_trials", "0"], "n_trials must be a positive integer", marks=pytest.mark.slow),
    pytest.param(["--pruner", "asha"], "unknown pruner 'asha'", marks=pytest.mark.slow),
    pytest.param(["--storage", "postgresql://ana:s3cret@127.0.0.1:1/optuna"], "carries a password, which MLflow would store and print",
                 marks=pytest.mark.slow),
    (["--storage", "env:DLFM_TEST_STORAGE"], "cannot open Optuna storage postgresql://ana:***@127.0.0.1:1/optuna"),
])
def test_bad_params_give_one_line_and_no_trial(args, message, tmp_path, tracking_uri):
    result = run_script([str(REPO / "pipelines/tune.py"), "--dataset", "model_ii", "--encoder", "conv4",
                         "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", *args], cwd=tmp_path,
                        env_extra={"DLFM_TEST_STORAGE": "postgresql://ana:s3cret@127.0.0.1:1/optuna"})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("dlfm: error: ") and message in lines[0]
    assert "s3cret" not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists()  # nothing simulated, no trial started
