"""Each instrument at its native size: one CNN encoder evaluates Model I (150 px) and Model III (64 px) sets."""

from __future__ import annotations

import pytest
import torch

from dlfm.sources import load_dataset
from dlfm.evaluation import TASKS, EvaluateConfig, run_grid
from dlfm.models import create_encoder
from dlfm.simulation import PRESETS, SimulationConfig, simulate_dataset


@pytest.mark.parametrize("preset", ["model_i", "model_iii"])
def test_evaluate_grid_runs_on_each_instrument_at_its_native_size(tmp_path, preset):
    dataset = load_dataset(simulate_dataset(SimulationConfig(preset=preset, n_train=12, n_val=6, n_test=6, seed=3),
                                            out_dir=tmp_path, workers=1, progress=False))
    assert dataset.image_size == PRESETS[preset].image_size  # no resize
    tasks = {"classification": TASKS["classification"].load(dataset, preset)}
    config = EvaluateConfig(tasks="classification", budgets="2,all", seeds="0", epochs=1, min_steps=2, batch_size=4)
    torch.manual_seed(0)
    results = run_grid(config, tasks, create_encoder("conv4"), torch.device("cpu"))
    assert len(results) == 2 * len(config.arm_list)
    assert all(0.0 <= r.metrics["test/macro_auc"] <= 1.0 for r in results)
