"""The search spaces, one table row per tunable objective (``search_space(trial) -> TrainConfig``).

A row names the objective's searched parameter and its bounds, the config fields a trial fixes,
the score (maximised), the per-epoch value pruners see, and the metrics logged beside the score.
``tune`` reads the row of ``TuneConfig.objective``; adding a searchable objective is adding a row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import optuna

from dlfm.training import TrainConfig

LR_FACTOR = 10.0  # with tune_lr: lr is log-uniform over [lr / 10, lr * 10] around the given lr


@dataclass(frozen=True)
class SearchSpace:
    objective: str  # a row of dlfm.objectives.OBJECTIVES; the trials train it
    param: str  # the TrainConfig field searched
    bounds: tuple[float, float]  # its range, both ends included
    log: bool  # sampled log-uniformly (a weight spanning decades) or uniformly (a fraction)
    fixed: tuple[tuple[str, object], ...]  # TrainConfig fields every trial sets, whatever was passed
    score: str  # the final metric the study maximises
    # per-epoch metric reported to the pruner, or None when the score only exists after training
    # (a probe on frozen embeddings): such trials report no intermediate value and are never pruned
    epoch_score: str | None
    beside: tuple[str, ...]  # final metrics shown with the score in trial lines, records and the parent run
    description: str


SEARCH_SPACES: dict[str, SearchSpace] = {
    space.objective: space
    for space in (
        SearchSpace("multitask", "recon_weight", (1e-3, 10.0), log=True, fixed=(("loss_balance", "fixed"),),
                    score="val/macro_auc", epoch_score="val/macro_auc", beside=("val/recon_mse",),
                    description="the multitask loss weight (CE + recon_weight x MSE), scored by val macro AUC"),
        SearchSpace("mae", "mask_ratio", (0.5, 0.95), log=False, fixed=(),
                    score="val/macro_auc", epoch_score=None, beside=("val/masked_mse", "val/masked_norm_mse"),
                    description="the fraction of patches hidden, scored by the linear probe's val macro AUC on frozen "
                                "embeddings (pretrained-frozen), the reconstruction error beside it"),
    )
}
RECON_WEIGHT_RANGE = SEARCH_SPACES["multitask"].bounds  # log-uniform bounds of the multitask loss weight (dimensionless)


def search_space(trial: optuna.Trial, base: TrainConfig, tune_lr: bool) -> TrainConfig:
    """The trial's config: ``base`` with its objective's searched parameter sampled (and lr with ``tune_lr``)."""
    space = SEARCH_SPACES[base.objective]
    changes = {space.param: trial.suggest_float(space.param, *space.bounds, log=space.log)}
    if tune_lr:
        centre = base.lr or base.recipe.base_lr  # a base lr per 256 images (0: the objective's recipe)
        changes["lr"] = trial.suggest_float("lr", centre / LR_FACTOR, centre * LR_FACTOR, log=True)
    return dataclasses.replace(base, **dict(space.fixed), **changes)
