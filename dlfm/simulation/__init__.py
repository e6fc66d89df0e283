"""Lensing-image simulation with lenstronomy, one job per module: presets and physics (the numbers),
config (what to simulate, the params.csv columns), renderer (one image), pool (all images, in
workers) and simulator (into a cached dataset directory, whose format ``dlfm.data.layout`` owns)."""

from dlfm.simulation.config import PARAM_COLUMNS, PARAM_UNITS, SimulationConfig
from dlfm.simulation.presets import DEFAULT_PRESET, PRESETS, Preset
from dlfm.simulation.renderer import LensRenderer
from dlfm.simulation.simulator import dataset_path, simulate_dataset

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
