"""What to simulate (``SimulationConfig``, whose digest names the cached dataset) and what each image records
(the ``params.csv`` columns with their units)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from dlfm.data.layout import SPLITS, json_default
from dlfm.errors import ConfigError
from dlfm.simulation.presets import DEFAULT_PRESET, PRESETS

# Bump when the rendering changes: it is part of the cache digest, so old caches are not reused.
SIM_VERSION = 1

# params.csv columns, in order, with units (also written to the manifest).
PARAM_UNITS = {
    "split": "",
    "label": "class index",
    "class_name": "",
    "theta_E": "arcsec",
    "e1": "",
    "e2": "",
    "gamma1": "",
    "gamma2": "",
    "q": "",
    "phi": "rad, in [0, pi)",
    "gamma_ext": "",
    "psi_ext": "rad, in [0, pi)",
    "lens_x": "arcsec",
    "lens_y": "arcsec",
    "src_x": "arcsec",
    "src_y": "arcsec",
    "src_R": "arcsec",
    "src_n": "",
    "src_e1": "",
    "src_e2": "",
    "src_mag": "mag (NaN when the preset sets an amplitude)",
    "src_amp": "lenstronomy amp (counts/s/arcsec^2 at R_sersic)",
    "n_subhalo": "count of point masses (cdm subhalos or vortex masses)",
    "m_subhalo_total": "Msun",
    "m_subhalo_max": "Msun",
    "axion_mass": "eV (NaN unless axion)",
    "vortex_angle": "rad (NaN unless axion)",
    "vortex_half_length": "arcsec (NaN unless axion)",
    "exposure_time": "s (total)",
}
PARAM_COLUMNS = tuple(PARAM_UNITS)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate; its digest names the cached dataset directory."""

    preset: str = DEFAULT_PRESET  # a row of dlfm.simulation.PRESETS: model_ii | model_i | model_iii | regression | pretrain (the self-supervised corpus) | pretrain_model_i, pretrain_model_iii (its other instruments) | anomaly_* (-e anomaly)
    n_train: int = 3000  # images in the train split (total over classes)
    n_val: int = 600  # images in the validation split
    n_test: int = 600  # images in the test split
    seed: int = 0  # root of every per-image SeedSequence (>= 0)
    vary_lens: bool = False  # classification presets: draw the macro lens from the regression priors

    @property
    def split_sizes(self) -> dict[str, int]:
        """Images per split, in row order (train, val, test)."""
        return dict(zip(SPLITS, (self.n_train, self.n_val, self.n_test)))

    def validate(self) -> None:
        """Raise ConfigError naming the bad setting and how to fix it."""
        if self.preset not in PRESETS:
            known = ", ".join(PRESETS)
            raise ConfigError(f"unknown simulation preset {self.preset!r}; choose one of: {known}")
        preset = PRESETS[self.preset]
        for name in ("n_train", "n_val", "n_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{name} must be an integer, got {value!r}; pass a whole number of images")
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}; pass at least 1 image per split")
            n_classes = len(preset.class_names)
            if value < n_classes:
                raise ConfigError(
                    f"{name}={value} is smaller than the {n_classes} classes of {self.preset}; "
                    f"pass at least {n_classes} so every class appears in every split"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}; pass e.g. -P seed=0")
        if not isinstance(self.vary_lens, (bool, np.bool_)):
            raise ConfigError(f"vary_lens must be true or false, got {self.vary_lens!r}")
        if self.vary_lens and preset.task != "classification":
            raise ConfigError(
                f"vary_lens applies to classification presets only; {self.preset} always draws "
                "the lens from its priors, so drop vary_lens"
            )

    def digest(self) -> str:
        """sha256 of the settings, the preset numbers and the renderer version (stable)."""
        self.validate()
        payload = {
            "config": dataclasses.asdict(self),
            "preset": PRESETS[self.preset].to_dict(),
            "sim_version": SIM_VERSION,
        }
        text = json.dumps(payload, sort_keys=True, default=json_default)
        return hashlib.sha256(text.encode()).hexdigest()
