"""Optuna tuning of the multitask loss weight (``mlflow run . -e tune``), one job per module:

config (TuneConfig), space (search_space), study (pruner, sampler, create/join), storage (URLs,
RDB storage), retry (heartbeat-stale trials), trials (one MLflow child run per trial), workers
(processes), results (trial records, the best encoder). Needs dlfm.sources, dlfm.data and dlfm.training, never
dlfm.stages.
"""

from dlfm.tune.config import DEFAULT_STORAGE, OBJECTIVE_METRIC, PRUNERS, TuneConfig
from dlfm.tune.space import search_space
from dlfm.tune.storage import mask_password, open_storage
from dlfm.tune.study import make_pruner

__all__ = ["DEFAULT_STORAGE", "OBJECTIVE_METRIC", "PRUNERS", "TuneConfig", "make_pruner", "mask_password",
           "open_storage", "search_space"]
