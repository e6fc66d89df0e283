"""The study: Optuna's pruner and sampler, and creating or joining the study in a storage."""

from __future__ import annotations

import optuna

from dlfm.errors import ConfigError
from dlfm.tune.config import OBJECTIVE_METRIC, TuneConfig


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
