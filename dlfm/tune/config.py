"""What a tune run searches and how: the frozen TuneConfig, its checks and the study name."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass

from dlfm.errors import ConfigError, SecretInParams
from dlfm.training import TrainConfig
from dlfm.training.config import PIXEL_AUTO
from dlfm.redact import redact_uri as mask_password
from dlfm.redact import has_secret

OBJECTIVE_METRIC = "val/macro_auc"  # maximised (every row of dlfm.tune.space.SEARCH_SPACES scores it today)
PRUNERS = ("median", "hyperband", "none")
STORAGE_ENV_PREFIX = "env:"  # storage=env:NAME reads the URL (password included) from environment variable NAME
# Fields that change what a trial computes: the automatic study name digests them, so rerunning
# the same command joins (resumes) the same study and a different set-up gets a new one.
# precision is left out like device: auto resolves per machine, and workers on mixed hardware share one study.
# The searched parameter (SEARCH_SPACES[objective].param) is left out too: trials set it.
STUDY_KEY_EXCLUDES = ("device", "precision", "experiment_name")

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"  # Optuna RDB storage beside the MLflow store


@dataclass(frozen=True)
class TuneConfig:
    train: TrainConfig  # the settings every trial starts from; the objective's searched param (and lr with tune_lr) is sampled
    objective: str = "multitask"  # a row of dlfm.tune.space.SEARCH_SPACES: multitask (searches recon_weight) | mae (mask_ratio)
    n_trials: int = 12  # finished trials (COMPLETE, PRUNED or FAIL) the study should hold; a rerun only adds the missing ones
    n_workers: int = 1  # worker processes on this machine, all on the same storage
    # an Optuna RDB URL without a password (sqlite:///..., postgresql://user@host/db with PGPASSWORD or
    # ~/.pgpass), or env:NAME to read the full URL from environment variable NAME (e.g. env:OPTUNA_STORAGE)
    storage: str = DEFAULT_STORAGE
    study_name: str = "auto"  # joined if it exists; "auto" = tune-<encoder>-<dataset>-<epochs>ep-<digest of the trial settings>
    # none | median | hyperband; none by the 3-seed benchmark (docs/results-log.md): no pruner saved >= 40 % of epochs
    pruner: str = "none"
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

        from dlfm.tune.space import SEARCH_SPACES

        need(self.objective in SEARCH_SPACES,
             f"tune searches the objectives {', '.join(SEARCH_SPACES)}, got objective={self.objective!r}")
        need(self.train.objective == self.objective,
             f"tune's trials train objective {self.objective!r}, but its train config is {self.train.objective!r}")
        need(not self.train.pretrain_dataset, "tune trains and probes on `dataset`; drop pretrain_dataset")
        self.train.validate()
        space = SEARCH_SPACES[self.objective]
        for name, value in space.fixed:
            need(getattr(self.train, name) == value, f"tune {self.objective} trains with {name}={value}, got {getattr(self.train, name)!r}")
        low, high = space.bounds
        for value in (low, high):  # each end of the search range must be a config the trial can train
            dataclasses.replace(self.train, **dict(space.fixed), **{space.param: value}).validate()
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
        if has_secret(self.storage):
            raise SecretInParams(f"storage {mask_password(self.storage)!r} carries a password, which MLflow would store and "
                                 "print; export OPTUNA_STORAGE=<the URL> and pass -P storage=env:OPTUNA_STORAGE, or drop the "
                                 "password and export PGPASSWORD")
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
        from dlfm.tune.space import SEARCH_SPACES

        searched = SEARCH_SPACES[self.objective].param
        key = {k: v for k, v in self.train.to_dict().items() if k not in STUDY_KEY_EXCLUDES and k != searched}
        key["tune_lr"] = self.tune_lr
        if key.get("pixel_scale") == PIXEL_AUTO:  # trials read one `dataset`, at one scale: auto is its native grid,
            key["pixel_scale"] = 0.0  # and studies named before auto existed (pixel_scale 0.0) keep their names
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        # Readable first (optuna-dashboard lists studies by name), the digest keeps different settings apart.
        dataset = re.sub(r"[^\w.\-]+", "_", self.train.dataset.rstrip("/").rsplit("/", 1)[-1])[:40].strip("._-") or "data"
        objective = "" if self.objective == "multitask" else f"{self.objective}-"  # multitask study names predate objective
        return f"tune-{objective}{self.train.encoder}-{dataset}-{self.train.epochs}ep-{digest[:8]}"

    def params(self) -> dict:
        """The tune settings as MLflow params (the storage with its password masked)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "train"}
        values["storage"] = mask_password(self.storage)
        values["study_name"] = self.resolved_study_name()
        return values
