"""Lensing-image simulation with lenstronomy: presets, physics, and cached dataset directories."""

from dlfm.simulation.presets import DEFAULT_PRESET, PRESETS, Preset
from dlfm.simulation.simulator import (
    PARAM_COLUMNS,
    PARAM_UNITS,
    LensRenderer,
    SimulationConfig,
    dataset_path,
    simulate_dataset,
)

__all__ = [
    "PRESETS",
    "DEFAULT_PRESET",
    "Preset",
    "SimulationConfig",
    "simulate_dataset",
    "dataset_path",
    "LensRenderer",
    "PARAM_COLUMNS",
    "PARAM_UNITS",
]
