"""Optuna search over the multitask loss weight, on the same ``fit`` the multitask stage calls.

One worker = one process running trials one at a time against a shared RDB storage (SQLite
on one machine, PostgreSQL across machines). Trials report ``val/macro_auc`` every epoch so
the pruner can stop them; heartbeats let another worker retry the trial of a killed one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from dlfm import tracking
from dlfm.errors import ConfigError, DlfmError
from dlfm.redact import redact_uri as mask_password  # the one redaction function, under tune's old name
from dlfm.redact import scrub, uri_password
from dlfm.training import TrainConfig, fit

OBJECTIVE_METRIC = "val/macro_auc"  # maximised
DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
PRUNERS = ("median", "hyperband", "none")
STORAGE_ENV_PREFIX = "env:"  # storage=env:NAME reads the URL (password included) from environment variable NAME
RECON_WEIGHT_RANGE = (1e-3, 10.0)  # log-uniform bounds of the multitask loss weight (dimensionless)
LR_FACTOR = 10.0  # with tune_lr: lr is log-uniform over [lr / 10, lr * 10] around the given lr
STATE_TAG = "dlfm.trial_state"
# Fields that change what a trial computes: the automatic study name digests them, so rerunning
# the same command joins (resumes) the same study and a different set-up gets a new one.
STUDY_KEY_EXCLUDES = ("device", "experiment_name", "recon_weight")


@dataclass(frozen=True)
class TuneConfig:
    train: TrainConfig  # the multitask settings every trial starts from; recon_weight (and lr with tune_lr) are searched
    n_trials: int = 12  # finished trials (COMPLETE, PRUNED or FAIL) the study should hold; a rerun only adds the missing ones
    n_workers: int = 1  # worker processes on this machine, all on the same storage
    # an Optuna RDB URL without a password (sqlite:///..., postgresql://user@host/db with PGPASSWORD or
    # ~/.pgpass), or env:NAME to read the full URL from environment variable NAME (e.g. env:OPTUNA_STORAGE)
    storage: str = DEFAULT_STORAGE
    study_name: str = "auto"  # joined if it exists; "auto" = dlfm-tune-<digest of the trial settings>
    pruner: str = "median"  # median | hyperband | none
    tune_lr: bool = False  # also search lr, log-uniform over [lr/10, 10 lr]
    prune_startup_trials: int = 3  # median: trials that must complete before any trial is pruned
    prune_warmup_epochs: int = 1  # median: epochs exempt from pruning (0 = may be pruned after its first epoch)
    heartbeat_interval: int = 60  # seconds between a running trial's heartbeats
    grace_period: int = 180  # seconds without a heartbeat before a trial counts as dead and is retried
    max_retry: int = 3  # retries of one dead trial (then its params are given up)

    def validate(self) -> None:
        """Raise ConfigError for any bad value, before any trial starts."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.train.objective == "multitask", f"tune searches the multitask objective, got {self.train.objective!r}")
        need(self.train.loss_balance == "fixed", "tune searches recon_weight, which only acts with loss_balance=fixed")
        self.train.validate()
        for name in ("n_trials", "n_workers", "heartbeat_interval", "grace_period"):
            value = getattr(self, name)
            need(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        for name in ("prune_startup_trials", "prune_warmup_epochs", "max_retry"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")
        need(self.pruner in PRUNERS, f"unknown pruner {self.pruner!r}; choose one of {', '.join(PRUNERS)}")
        need(self.grace_period >= self.heartbeat_interval,
             f"grace_period ({self.grace_period} s) must be >= heartbeat_interval ({self.heartbeat_interval} s)")
        need(bool(re.fullmatch(r"[A-Za-z0-9][\w.\-]{0,127}", self.study_name)),
             f"study_name must be letters, digits, '.', '-' or '_' (or auto), got {self.study_name!r}")
        # mlflow run stores -P values as params and prints its command line, so no password may travel in one.
        need(not uri_password(self.storage),
             f"storage {mask_password(self.storage)!r} carries a password, which MLflow would store and print; export "
             "OPTUNA_STORAGE=<the URL> and pass -P storage=env:OPTUNA_STORAGE, or drop the password and export PGPASSWORD")
        url = self.storage_url()
        need("://" in url, f"storage must be an Optuna RDB URL such as {DEFAULT_STORAGE} or "
                           f"postgresql://user@host/db, got {mask_password(url)!r}")

    def storage_url(self) -> str:
        """The Optuna URL: ``storage`` itself, or for ``env:NAME`` the value of that environment variable."""
        if not self.storage.startswith(STORAGE_ENV_PREFIX):
            return self.storage
        name = self.storage[len(STORAGE_ENV_PREFIX):]
        value = os.environ.get(name, "")
        if not value:
            raise ConfigError(f"storage {self.storage} names environment variable {name!r}, which is not set; "
                              f"export {name}=postgresql://user:password@host/db")
        return value

    def resolved_study_name(self) -> str:
        """``study_name``, or for ``auto`` a name derived from everything that shapes a trial."""
        if self.study_name != "auto":
            return self.study_name
        key = {k: v for k, v in self.train.to_dict().items() if k not in STUDY_KEY_EXCLUDES}
        key["tune_lr"] = self.tune_lr
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return f"dlfm-tune-{digest[:10]}"

    def params(self) -> dict:
        """The tune settings as MLflow params (the storage with its password masked)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "train"}
        values["storage"] = mask_password(self.storage)
        values["study_name"] = self.resolved_study_name()
        return values


def search_space(trial: optuna.Trial, base: TrainConfig, tune_lr: bool) -> TrainConfig:
    """The trial's multitask config: ``base`` with a sampled recon_weight (and lr)."""
    changes = {"recon_weight": trial.suggest_float("recon_weight", *RECON_WEIGHT_RANGE, log=True)}
    if tune_lr:
        changes["lr"] = trial.suggest_float("lr", base.lr / LR_FACTOR, base.lr * LR_FACTOR, log=True)
    return dataclasses.replace(base, objective="multitask", loss_balance="fixed", **changes)


def make_pruner(config: TuneConfig) -> optuna.pruners.BasePruner:
    """median (MedianPruner), hyperband (HyperbandPruner over epochs) or none (NopPruner)."""
    if config.pruner == "median":
        # Steps are epochs counted from 1 and Optuna prunes from step n_warmup_steps on, hence the + 1.
        return optuna.pruners.MedianPruner(n_startup_trials=config.prune_startup_trials,
                                           n_warmup_steps=config.prune_warmup_epochs + 1)
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.train.epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def make_sampler(config: TuneConfig, worker_index: int, n_existing: int) -> optuna.samplers.BaseSampler:
    """TPE seeded from ``seed``; offset per worker and per resume so no two workers replay one random stream."""
    # TPE's first trials are random draws; a 12-trial budget with the default 10 would be mostly random search.
    startup = max(2, min(10, config.n_trials // 3))
    return optuna.samplers.TPESampler(seed=config.train.seed + 1000 * worker_index + n_existing, n_startup_trials=startup)


# ---------------------------------------------------------------- storage


def postgres_driver(url: str) -> str:
    """``postgresql://`` → ``postgresql+psycopg2://`` when only psycopg2 (our pinned driver) is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; an explicit driver is kept.
    """
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


class RetryStaleTrial:
    """Optuna's RetryHeartbeatStaleTrialCallback, plus ending the dead trial's MLflow child run FAILED."""

    def __init__(self, max_retry: int):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.retry(study, trial)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            reason = f"trial {trial.number}: its worker stopped sending heartbeats (killed?); retried as a new trial"
            with contextlib.suppress(Exception):  # the study must go on even if the tracking server hiccups
                tracking.terminate_run(run_id, "FAILED", {STATE_TAG: "FAIL", "dlfm.error": reason})


def open_storage(config: TuneConfig) -> optuna.storages.RDBStorage:
    """The RDB storage with heartbeats and stale-trial retries; ConfigError (password masked) if unreachable."""
    url = postgres_driver(config.storage_url())
    if url == DEFAULT_STORAGE:
        Path("mlruns").mkdir(exist_ok=True)
    engine_kwargs: dict = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}  # seconds to wait for another worker's write lock
    elif url.startswith("postgresql"):
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=config.heartbeat_interval,
                grace_period=config.grace_period, heartbeat_stale_trial_callback=RetryStaleTrial(config.max_retry))
    except Exception as error:  # noqa: BLE001 - drivers raise many types; all mean "cannot use this storage"
        cause = error.__cause__ if isinstance(error, ImportError) and error.__cause__ else error  # name the missing module
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        reason = scrub(reason, url, config.storage_url())
        raise ConfigError(f"cannot open Optuna storage {mask_password(config.storage_url())}: {reason}") from None


def load_or_create_study(config: TuneConfig, storage, worker_index: int = 0) -> optuna.Study:
    """Create the study, or join it when it exists (a rerun or another machine)."""
    name = config.resolved_study_name()
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    except ValueError as error:  # e.g. an existing study of the same name with another direction
        raise ConfigError(f"cannot join study {name!r}: {error}; pick another study_name") from None
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study {name!r} exists and minimises; tune maximises {OBJECTIVE_METRIC}: pick another study_name")
    n_existing = len(study.get_trials(deepcopy=False))
    return optuna.load_study(study_name=name, storage=storage, pruner=make_pruner(config),
                             sampler=make_sampler(config, worker_index, n_existing))


# ---------------------------------------------------------------- trials


@dataclass
class TrialSetup:
    """What every trial of one worker shares: data, device and where to log."""

    config: TuneConfig
    parent_run_id: str
    splits: dict
    class_names: tuple[str, ...]
    image_size: int
    runtime: object  # dlfm.training.runtime.Runtime, resolved once per worker


class NonFiniteObjectiveError(RuntimeError):
    """The trial's val/macro_auc came out NaN or infinite."""


def counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """COMPLETE, PRUNED, and FAIL from an error in the trial itself.

    A FAIL without ``fail_reason`` is a dead worker's (heartbeat) or an interrupted trial:
    it is retried or replaced, so it does not use up the budget.
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


def wants_another_trial(study: optuna.Study, n_trials: int) -> bool:
    """Retries are waiting, or finished plus running trials are fewer than ``n_trials``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # turn dead workers' trials into WAITING retries first
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    done = sum(counts_toward_budget(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return done + running < n_trials


def make_objective(setup: TrialSetup, on_trial_start: Callable[[], None] = lambda: None):
    """The Optuna objective: one MLflow child run around ``fit``, reporting each epoch for pruning."""

    def objective(trial: optuna.Trial) -> float:
        on_trial_start()
        try:
            return _run_trial(trial, setup)
        except optuna.TrialPruned:
            raise
        except Exception as error:  # noqa: BLE001 - recorded as the FAIL reason; optimize(catch=...) goes on
            text = str(error).strip().splitlines()[0] if str(error).strip() else ""
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {text}"[:1000])
            raise

    return objective


def _retry_of(trial: optuna.Trial) -> int | None:
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    return frozen.system_attrs.get("failed_trial")


def _run_trial(trial: optuna.Trial, setup: TrialSetup) -> float:
    config = search_space(trial, setup.config.train, setup.config.tune_lr)
    tags = {"dlfm.stage": "tune", "dlfm.trial_number": trial.number, "dlfm.study_name": trial.study.study_name,
            STATE_TAG: "RUNNING", "dlfm.objective": "multitask", "dlfm.encoder": config.encoder}
    retry_of = _retry_of(trial)
    if retry_of is not None:
        tags["dlfm.retry_of_trial"] = retry_of
    params_text = ", ".join(f"{k}={v:.3g}" for k, v in trial.params.items())
    with tracking.trial_run(setup.parent_run_id, f"trial-{trial.number:03d} {params_text}", tags,
                            finished_on=(optuna.TrialPruned,)) as run_id:
        trial.set_user_attr("mlflow_run_id", run_id)
        tracking.log_params({**config.to_dict(), "trial_number": trial.number})
        try:
            value = _train(trial, config, setup)
        except optuna.TrialPruned as pruned:
            tracking.set_tags({STATE_TAG: "PRUNED", "dlfm.pruned_reason": str(pruned)})
            raise
        except BaseException as error:
            text = str(error).strip().splitlines()[0] if str(error).strip() else ""
            tracking.set_tags({STATE_TAG: "FAIL", "dlfm.fail_reason": f"{type(error).__name__}: {text}"[:5000]})
            raise
        tracking.set_tags({STATE_TAG: "COMPLETE"})
        return value


def _train(trial: optuna.Trial, config: TrainConfig, setup: TrialSetup) -> float:
    """``fit`` with per-epoch reports; the best-so-far trial logs its encoder for registration."""

    def on_epoch_end(epoch: int, metrics: dict, make_checkpoint) -> None:
        tracking.log_metrics(metrics, step=epoch)
        value = metrics[OBJECTIVE_METRIC]
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {OBJECTIVE_METRIC} {value:.4f}")

    result = fit(config, setup.splits, setup.class_names, on_epoch_end=on_epoch_end, runtime=setup.runtime, progress=False)
    tracking.log_metrics({**result.final_metrics, "best_epoch": result.best_epoch}, step=len(result.history))
    value = float(result.final_metrics[OBJECTIVE_METRIC])
    if not math.isfinite(value):
        raise NonFiniteObjectiveError(f"{OBJECTIVE_METRIC} is {value} at the best epoch")
    trial.set_user_attr("final_metrics", {k: float(v) for k, v in result.final_metrics.items()})
    trial.set_user_attr("best_epoch", result.best_epoch)
    # Only a trial at least as good as every completed one can end up best, so only it pays
    # for logging its weights; the final best trial always passes this test.
    completed = [t.value for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not completed or value >= max(completed):
        tracking.log_encoder(result.model.encoder, setup.image_size, "multitask")
        trial.set_user_attr("encoder_logged", True)
    return value


# ---------------------------------------------------------------- workers


class _StartGate:
    """Serialises "is another trial needed? then ask for it" among this machine's workers.

    The lock is taken before counting and released once the new trial exists (first line of
    the objective), so local workers never overshoot ``n_trials``.
    """

    def __init__(self, lock):
        self.lock = lock
        self.held = False

    def acquire(self) -> None:
        if self.lock is not None:
            self.lock.acquire()
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.lock.release()


def run_trials(study: optuna.Study, setup: TrialSetup, lock=None) -> int:
    """Run trials one at a time until the study holds ``n_trials`` finished ones; return how many ran."""
    target = setup.config.n_trials
    ran = 0
    for _ in range(3 * target + 10):  # a safety bound: every attempt normally finishes or counts
        gate = _StartGate(lock)
        gate.acquire()
        try:
            if not wants_another_trial(study, target):
                break
            study.optimize(make_objective(setup, gate.release), n_trials=1, catch=(Exception,))
            ran += 1
        finally:
            gate.release()
    return ran


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a spawned worker needs (picklable)."""

    config: TuneConfig
    parent_run_id: str
    dataset_path: str
    worker_index: int
    torch_threads: int


def load_setup(config: TuneConfig, parent_run_id: str, dataset) -> TrialSetup:
    """Tensors and runtime for this worker's trials."""
    from dlfm.stages.common import split_tensors
    from dlfm.training.runtime import make_runtime

    splits = {name: split_tensors(dataset, name) for name in ("train", "val", "test")}
    return TrialSetup(config, parent_run_id, splits, dataset.class_names, dataset.image_size,
                      make_runtime(config.train.device))


def worker_main(spec: WorkerSpec, lock) -> None:
    """Body of one spawned worker process: open the storage, join the study, run trials."""
    import torch

    from dlfm.stages.common import resolve_dataset

    os.environ.pop("MLFLOW_RUN_ID", None)
    torch.set_num_threads(spec.torch_threads)
    try:
        study = load_or_create_study(spec.config, open_storage(spec.config), spec.worker_index)
        setup = load_setup(spec.config, spec.parent_run_id, resolve_dataset(spec.dataset_path))
        run_trials(study, setup, lock)
    except DlfmError as error:
        print(f"dlfm: error: worker {spec.worker_index}: {str(error).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)


def run_workers(config: TuneConfig, parent_run_id: str, dataset, study: optuna.Study) -> list[int]:
    """Run the trials here (one worker) or in ``n_workers`` spawned processes; return their exit codes."""
    if config.n_workers == 1:
        run_trials(study, load_setup(config, parent_run_id, dataset))
        return [0]
    if dataset.root is None:
        raise ConfigError("n_workers > 1 needs a dataset on disk (a preset or a dataset directory)")
    import torch

    context = multiprocessing.get_context("spawn")  # fork would copy torch's and MLflow's threads
    lock = context.Lock()
    threads = max(1, torch.get_num_threads() // config.n_workers)
    processes = [context.Process(target=worker_main, name=f"dlfm-tune-worker-{index}",
                                 args=(WorkerSpec(config, parent_run_id, str(dataset.root), index, threads), lock))
                 for index in range(config.n_workers)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=30)
        raise
    return [process.exitcode for process in processes]


# ---------------------------------------------------------------- results


def trial_records(study: optuna.Study) -> list[dict]:
    """Plain dicts of every trial (number, state, value, params, per-epoch values, user attrs)."""
    return [{
        "number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
        "intermediate": dict(sorted(t.intermediate_values.items())), "user_attrs": dict(t.user_attrs),
        "retry_of": t.system_attrs.get("failed_trial"),
    } for t in study.get_trials(deepcopy=False)]


def load_best_encoder(record: dict):
    """The encoder the best trial logged to its child run (weights-only load)."""
    from dlfm.models.serialization import load_encoder

    run_id = record["user_attrs"].get("mlflow_run_id")
    if not record["user_attrs"].get("encoder_logged") or not run_id:
        raise DlfmError(f"best trial {record['number']} logged no encoder; rerun tune to train it again")
    with tempfile.TemporaryDirectory() as tmp:
        local = tracking.download_run_artifacts(run_id, "encoder", tmp)
        return load_encoder(local)


__all__ = [
    "DEFAULT_STORAGE", "OBJECTIVE_METRIC", "PRUNERS", "TuneConfig", "TrialSetup", "load_or_create_study",
    "make_objective", "make_pruner", "mask_password", "open_storage", "run_trials", "run_workers", "search_space",
    "trial_records", "wants_another_trial",
]
