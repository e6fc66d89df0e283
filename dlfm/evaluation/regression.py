"""Lens-parameter regression pieces of the evaluation engine (pure numpy; no MLflow).

The learned targets and their physical read-out, MAE per parameter (circular for angles), and the
feature/target standardiser. Targets are standardised; angles are learned through (e1, e2) and
(γ1, γ2) and turned back, so the periodic φ and ψ (period π) never need a discontinuous regression target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dlfm.errors import DatasetError

TARGETS = ("theta_E", "src_x", "src_y", "e1", "e2", "gamma1", "gamma2")  # learned, standardised
REPORTED = (  # MAE names, physical units: arcsec, arcsec, arcsec, -, -, -, -, -, -, rad, -, rad
    "theta_E", "src_x", "src_y", "e1", "e2", "gamma1", "gamma2", "ellipticity", "q", "phi", "gamma_ext", "psi_ext",
)
UNITS = {"theta_E": "arcsec", "src_x": "arcsec", "src_y": "arcsec", "phi": "rad", "psi_ext": "rad"}


def unit_label(name: str) -> str:
    """The unit of a reported parameter's MAE for tables: arcsec, rad, or dimensionless (e1, e2, q, shear, …)."""
    return UNITS.get(name, "dimensionless")


def regression_targets(params, split_name: str = "dataset") -> np.ndarray:
    """(n, 7) float64 array of the learned targets; DatasetError if the table lacks them."""
    missing = [name for name in TARGETS if name not in params.columns]
    if missing:
        raise DatasetError(f"{split_name} has no lens-parameter columns {missing}; transfer needs the regression "
                           "preset or a dataset simulated with vary_lens=true")
    return params[list(TARGETS)].to_numpy(dtype=np.float64)


def check_lens_parameters_vary(train_targets: np.ndarray, dataset_name: str) -> None:
    """A dataset whose macro-lens parameters are fixed cannot test lens-parameter regression."""
    constant = [name for name, std in zip(TARGETS, train_targets.std(axis=0)) if std < 1e-9]
    if constant:
        raise DatasetError(f"dataset {dataset_name!r} has fixed lens parameters {constant}; transfer needs the "
                           "regression preset or a dataset simulated with vary_lens=true")


@dataclass
class Standardizer:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> "Standardizer":
        std = values.std(axis=0)
        # A feature (e.g. a dead ReLU of a random encoder) that is constant on train must not blow
        # up on val/test, so the floor is relative to the typical spread, not just 1e-8.
        floor = max(1e-3 * float(np.median(std)), 1e-8)
        return cls(values.mean(axis=0), np.maximum(std, floor))

    def forward(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean


def circular_abs_diff(a: np.ndarray, b: np.ndarray, period: float = math.pi) -> np.ndarray:
    """|a − b| on a circle of the given period: never more than period/2."""
    diff = np.mod(np.asarray(a) - np.asarray(b), period)
    return np.minimum(diff, period - diff)


def physical_parameters(targets: np.ndarray) -> dict[str, np.ndarray]:
    """The 7 learned targets plus the derived |e|, q, φ (rad), γ_ext and ψ_ext (rad)."""
    values = {name: targets[:, i] for i, name in enumerate(TARGETS)}
    ellipticity = np.hypot(values["e1"], values["e2"])
    values["ellipticity"] = ellipticity
    values["q"] = (1 - ellipticity) / (1 + ellipticity)  # lenstronomy: |e| = (1 − q) / (1 + q)
    values["phi"] = np.mod(0.5 * np.arctan2(values["e2"], values["e1"]), math.pi)
    values["gamma_ext"] = np.hypot(values["gamma1"], values["gamma2"])
    values["psi_ext"] = np.mod(0.5 * np.arctan2(values["gamma2"], values["gamma1"]), math.pi)
    return values


def mae_per_parameter(predicted: np.ndarray, true: np.ndarray, prefix: str) -> dict[str, float]:
    """``{prefix}/mae_<param>`` in physical units; φ and ψ as circular differences (period π)."""
    pred, truth = physical_parameters(predicted), physical_parameters(true)
    metrics = {}
    for name in REPORTED:
        if name in ("phi", "psi_ext"):
            error = circular_abs_diff(pred[name], truth[name])
        else:
            error = np.abs(pred[name] - truth[name])
        metrics[f"{prefix}/mae_{name}"] = float(error.mean())
    return metrics
