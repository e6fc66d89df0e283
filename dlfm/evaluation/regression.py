"""Regression pieces of the evaluation engine (pure numpy; no MLflow): readouts and MAE (the standardiser: dlfm.training.probe).

A ``Readout`` says which params columns a regression learns, how its predictions become the reported
values, and which MAEs carry which unit. ``READOUT_RULES`` picks one per dataset, once, when the task
loads: a params table with the simulator's seven lens targets gets ``LENS`` (|e|, φ, γ_ext, ψ_ext
derived and reported apart; angles learned through (e1, e2) and (γ1, γ2) and turned back, so the periodic φ
and ψ (period π) never need a discontinuous target; each angle scored only where its modulus is above a
floor); any other table gets its declared numeric columns, one MAE each. ``rel_mae`` averages over the
independent targets only (the 7 lens columns, or the imported columns), each counted once.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from dlfm.data.dataset import REGRESSION_TARGETS
from dlfm.data.user_arrays import CLASS_NAME_PATTERN, RESERVED_COLUMNS
from dlfm.errors import DatasetError

TARGETS = REGRESSION_TARGETS  # learned, standardised (the simulator's lens columns; one home: dlfm.data.dataset)
# Functions of the targets, reported apart and never averaged into rel_mae: |e| and φ come from (e1, e2), |γ| and ψ
# from (γ1, γ2), so counting them again would weigh ellipticity and shear several times (q = (1−|e|)/(1+|e|) is
# |e| once more, so it is not reported).
DERIVED = ("ellipticity", "phi", "gamma_ext", "psi_ext")
REPORTED = (*TARGETS, *DERIVED)  # MAE names, physical units: arcsec, arcsec, arcsec, -, -, -, -, -, rad, -, rad
# An angle is defined only where its modulus is not ~0: φ is scored on test lenses with |e| > ELLIPTICITY_FLOOR,
# ψ on those with |γ| > SHEAR_FLOOR (priors: |e| in [0, 1/3] from q ~ U(0.5, 1); γ ~ U(0, 0.1)).
ELLIPTICITY_FLOOR = 0.05  # |e| (dimensionless; q < 0.905)
SHEAR_FLOOR = 0.02  # |γ_ext| (dimensionless)
DEFINED_WHERE = {"phi": ("ellipticity", ELLIPTICITY_FLOOR), "psi_ext": ("gamma_ext", SHEAR_FLOOR)}  # name → (modulus, floor)
UNITS = {"theta_E": "arcsec", "src_x": "arcsec", "src_y": "arcsec", "phi": "rad", "psi_ext": "rad"}
BOOKKEEPING = ("split", "file", *RESERVED_COLUMNS)  # params columns that are never targets (the importer's own)
COLUMN_UNIT = "CSV units, unknown to dlfm"  # a user column's MAE is in whatever unit the column was written in


def physical_parameters(targets: np.ndarray) -> dict[str, np.ndarray]:
    """The 7 learned targets plus the derived |e|, φ (rad), γ_ext and ψ_ext (rad)."""
    values = {name: targets[:, i] for i, name in enumerate(TARGETS)}
    values["ellipticity"] = np.hypot(values["e1"], values["e2"])  # lenstronomy: |e| = (1 − q) / (1 + q)
    values["phi"] = np.mod(0.5 * np.arctan2(values["e2"], values["e1"]), math.pi)
    values["gamma_ext"] = np.hypot(values["gamma1"], values["gamma2"])
    values["psi_ext"] = np.mod(0.5 * np.arctan2(values["gamma2"], values["gamma1"]), math.pi)
    return values


def _named_columns(columns: tuple[str, ...], targets: np.ndarray) -> dict[str, np.ndarray]:
    """Each learned column as itself: no derived values."""
    return {name: targets[:, i] for i, name in enumerate(columns)}


def circular_abs_diff(a: np.ndarray, b: np.ndarray, period: float = math.pi) -> np.ndarray:
    """|a − b| on a circle of the given period: never more than period/2."""
    diff = np.mod(np.asarray(a) - np.asarray(b), period)
    return np.minimum(diff, period - diff)


@dataclass(frozen=True)
class Readout:
    """Which params columns a regression learns, how predictions read out, and which MAEs (in which units) it reports."""

    kind: str  # the READOUT_RULES row that chose it
    subject: str  # what the targets are, for messages and figure titles
    columns: tuple[str, ...]  # params columns learned (standardised), in this order
    reported: tuple[str, ...]  # test/mae_<name> names, in table order: the independent targets, then derived ones
    derive: Callable[[np.ndarray], dict[str, np.ndarray]]  # (n, len(columns)) values → {reported name: (n,) values}
    units: dict[str, str] = field(default_factory=dict)  # name → unit shown in figure titles and tables
    default_unit: str = "dimensionless"  # the table's unit of a name absent from units
    circular: tuple[str, ...] = ()  # names whose error is a circular difference (period π)
    constant_fix: str = ""  # the fix a refusal of constant-on-train columns names
    independent: tuple[str, ...] = ()  # the names rel_mae averages over (each learned quantity once); empty: reported
    # name → (modulus name, floor): the name is scored only on lenses whose true modulus is above the floor
    defined_where: dict = field(default_factory=dict)

    @property
    def averaged(self) -> tuple[str, ...]:
        """The names the headline rel_mae averages over: each independent target once."""
        return self.independent or self.reported

    @property
    def derived(self) -> tuple[str, ...]:
        """Reported names that are functions of the independent ones (tables mark them; rel_mae leaves them out)."""
        return tuple(name for name in self.reported if name not in self.averaged)

    def unit_label(self, name: str) -> str:
        """The unit of a reported name's MAE, for tables."""
        return self.units.get(name, self.default_unit)

    def mae(self, predicted: np.ndarray, true: np.ndarray, prefix: str) -> dict[str, float]:
        """``{prefix}/mae_<name>`` per reported name (circular differences where the readout says so); an angle only
        over the lenses where it is defined (``defined_where``), and absent when no test lens qualifies."""
        pred, truth = self.derive(predicted), self.derive(true)
        metrics = {}
        for name in self.reported:
            if name in self.circular:
                error = circular_abs_diff(pred[name], truth[name])
            else:
                error = np.abs(pred[name] - truth[name])
            if name in self.defined_where:
                modulus, floor = self.defined_where[name]
                error = error[truth[modulus] > floor]
            if len(error):
                metrics[f"{prefix}/mae_{name}"] = float(error.mean())
        return metrics

    def rel_mae(self, metrics: dict[str, float], baseline: dict[str, float], prefix: str = "test") -> float:
        """Mean over the independent targets (``averaged``) of MAE / the mean predictor's MAE (1 = no skill)."""
        key = f"{prefix}/mae_{{}}"
        return float(np.mean([metrics[key.format(p)] / max(baseline[key.format(p)], 1e-12) for p in self.averaged]))

    def targets(self, params, dataset_name: str) -> np.ndarray:
        """(n, len(columns)) float64 array of the learned columns; DatasetError for missing values."""
        values = params[list(self.columns)].to_numpy(dtype=np.float64)
        missing = [name for name, bad in zip(self.columns, np.isnan(values).any(axis=0)) if bad]
        if missing:
            raise DatasetError(f"dataset {dataset_name!r} has missing values in target columns {missing}; "
                               "fill them or drop those rows from the params CSV and import again")
        return values

    def check_vary(self, train_targets: np.ndarray, dataset_name: str) -> None:
        """Columns constant on train cannot be learned (or standardised): one line naming them."""
        constant = [name for name, std in zip(self.columns, train_targets.std(axis=0)) if std < 1e-9]
        if constant:
            raise DatasetError(f"dataset {dataset_name!r} has fixed {self.subject} {constant}; {self.constant_fix}")


LENS = Readout(
    kind="lens", subject="lens parameters", columns=TARGETS, reported=REPORTED, derive=physical_parameters,
    units=UNITS, circular=("phi", "psi_ext"), independent=TARGETS, defined_where=DEFINED_WHERE,
    constant_fix="transfer needs the regression preset or a dataset simulated with vary_lens=true",
)


def column_readout(params, manifest: dict, dataset_name: str) -> Readout:
    """The dataset's declared numeric target columns (manifest ``targets``, else every numeric column), one MAE each."""
    declared = manifest.get("targets")
    if declared is None:
        declared = [c for c in params.columns if np.issubdtype(params[c].dtype, np.number)]
    columns = tuple(str(c) for c in declared if c not in BOOKKEEPING)
    absent = [c for c in columns if c not in params.columns]
    if not columns or absent:
        what = f"lacks its declared target columns {absent}" if absent else "has no numeric target column"
        raise DatasetError(f"dataset {dataset_name!r} {what}; regression needs the regression preset, a dataset simulated "
                           "with vary_lens=true, or one imported with --params holding numeric columns")
    text = [c for c in columns if not np.issubdtype(params[c].dtype, np.number)]
    odd = [c for c in columns if not CLASS_NAME_PATTERN.fullmatch(c)]  # they become metric names: test/mae_<column>
    if text or odd:
        raise DatasetError(f"dataset {dataset_name!r} target column {(text or odd)[0]!r} "
                           + ("is not numeric; make it a number or drop it from the params CSV" if text else
                              "has characters metric names refuse; rename it with letters, digits, _ - . and spaces")
                           + " and import again")
    return Readout(
        kind="columns", subject="target columns", columns=columns, reported=columns,
        derive=functools.partial(_named_columns, columns), default_unit=COLUMN_UNIT,
        constant_fix="drop them from the params CSV and import again (a column constant on train cannot be learned)",
    )


# (kind, applies(params, manifest), build(params, manifest, dataset name)): the first row that applies is the readout.
READOUT_RULES = (
    ("lens", lambda params, manifest: set(TARGETS) <= set(params.columns), lambda params, manifest, name: LENS),
    ("columns", lambda params, manifest: True, column_readout),
)


def choose_readout(params, manifest: dict, dataset_name: str) -> Readout:
    """The readout of a dataset's params table: the first READOUT_RULES row that applies."""
    build = next(build for _, applies, build in READOUT_RULES if applies(params, manifest))
    return build(params, manifest, dataset_name)


def mae_per_parameter(predicted: np.ndarray, true: np.ndarray, prefix: str) -> dict[str, float]:
    """``{prefix}/mae_<param>`` of the lens readout in physical units; φ and ψ as circular differences (period π)."""
    return LENS.mae(predicted, true, prefix)
