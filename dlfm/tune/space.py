"""The search space: the multitask config a trial tries (``search_space(trial) -> TrainConfig``)."""

from __future__ import annotations

import dataclasses

import optuna

from dlfm.training import TrainConfig

RECON_WEIGHT_RANGE = (1e-3, 10.0)  # log-uniform bounds of the multitask loss weight (dimensionless)
LR_FACTOR = 10.0  # with tune_lr: lr is log-uniform over [lr / 10, lr * 10] around the given lr


def search_space(trial: optuna.Trial, base: TrainConfig, tune_lr: bool) -> TrainConfig:
    """The trial's multitask config: ``base`` with a sampled recon_weight (and lr)."""
    changes = {"recon_weight": trial.suggest_float("recon_weight", *RECON_WEIGHT_RANGE, log=True)}
    if tune_lr:
        changes["lr"] = trial.suggest_float("lr", base.lr / LR_FACTOR, base.lr * LR_FACTOR, log=True)
    return dataclasses.replace(base, objective="multitask", loss_balance="fixed", **changes)
