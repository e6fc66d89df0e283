"""The preset source: a simulation preset's name (``model_ii``, ``regression``, …), simulated on demand and cached."""

from __future__ import annotations

from dlfm.data.dataset import load_dataset_dir
from dlfm.simulation.config import SimulationConfig
from dlfm.simulation.presets import PRESETS
from dlfm.sources.base import Request


def claims(spec: str) -> bool:
    """A preset's name."""
    return spec in PRESETS


def load(spec: str, request: Request):
    """Simulate the preset at the requested sizes and seed (or reuse its verified cache), then read it."""
    from dlfm.simulation.simulator import simulate_dataset  # lenstronomy is only loaded when something is simulated

    config = SimulationConfig(preset=spec, n_train=request.n_train, n_val=request.n_val, n_test=request.n_test, seed=request.seed)
    config.validate()
    path = simulate_dataset(config, out_dir=request.data_dir, workers=request.workers)
    return load_dataset_dir(path, normalize=request.normalize, verify=request.verify)
