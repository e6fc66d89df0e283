"""The study: Optuna's pruner and sampler, and creating or joining the study in a storage."""

from __future__ import annotations

import warnings

import optuna

from dlfm.errors import ConfigError
from dlfm.tune.config import TuneConfig
from dlfm.tune.space import SEARCH_SPACES


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


def describe_study(study: optuna.Study, parent_run_id: str, dataset_digest: str, encoder: str, tracking_view: str) -> None:
    """User attrs that tie the study to MLflow (shown by optuna-dashboard): the latest parent run, data, encoder."""
    score = SEARCH_SPACES[study.user_attrs.get("objective", "multitask")].score
    for key, value in {"mlflow_parent_run_id": parent_run_id, "dataset_digest": dataset_digest, "encoder": encoder,
                       "objective_metric": score, "mlflow_view": tracking_view}.items():
        study.set_user_attr(key, value)


def trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial, worker_index: int = 0) -> str:
    """One line per finished trial: number, state, value, params, duration (and the failure reason)."""
    space = SEARCH_SPACES[study.user_attrs.get("objective", "multitask")]
    value = f" {space.score} {trial.value:.4f}" if trial.value is not None else ""
    final = trial.user_attrs.get("final_metrics", {})
    value += "".join(f" {name} {final[name]:.4g}" for name in space.beside if name in final)  # the cost beside the score
    params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    seconds = f" {trial.duration.total_seconds():.0f}s" if trial.duration else ""
    reason = trial.user_attrs.get("fail_reason", "")
    best = ""
    try:
        best = f" (best so far: trial {study.best_trial.number}, {study.best_value:.4f})"
    except ValueError:  # no trial completed yet
        pass
    return (f"[tune] trial {trial.number} {trial.state.name}{value} {params}{seconds} worker {worker_index}"
            + (f": {reason}" if reason else "") + best)


def load_or_create_study(config: TuneConfig, storage, worker_index: int = 0) -> optuna.Study:
    """Create the study, or join it when it exists (a rerun or another machine)."""
    name = config.resolved_study_name()
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    except ValueError as error:  # e.g. an existing study of the same name with another direction
        raise ConfigError(f"cannot join study {name!r}: {error}; pick another study_name") from None
    space = SEARCH_SPACES[config.objective]
    # A study made before tune took `objective` has trials and no such attribute: it tuned multitask.
    tuned = study.user_attrs.get("objective", "multitask" if study.get_trials(deepcopy=False) else config.objective)
    if tuned != config.objective:
        raise ConfigError(f"study {name!r} tunes objective {tuned!r}, not {config.objective!r}: pick another study_name")
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study {name!r} exists and minimises; tune maximises {space.score}: pick another study_name")
    study.set_user_attr("objective", config.objective)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([space.score])  # optuna-dashboard then labels the objective axis
    n_existing = len(study.get_trials(deepcopy=False))
    return optuna.load_study(study_name=name, storage=storage, pruner=make_pruner(config),
                             sampler=make_sampler(config, worker_index, n_existing))
