"""Optuna tuning of the multitask loss weight (``mlflow run . -e tune``)."""

from dlfm.tune.search import (
    DEFAULT_STORAGE,
    OBJECTIVE_METRIC,
    PRUNERS,
    TuneConfig,
    make_pruner,
    mask_password,
    open_storage,
    search_space,
)

__all__ = ["DEFAULT_STORAGE", "OBJECTIVE_METRIC", "PRUNERS", "TuneConfig", "make_pruner", "mask_password",
           "open_storage", "search_space"]
