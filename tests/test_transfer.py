"""The transfer stage: a fair pretrained-vs-random ablation on tiny data."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pytest
import torch

from dlfm.errors import DatasetError
from dlfm.models import create_encoder
from dlfm.stages.transfer import run_transfer_stage
from dlfm.tracking import registry, stage_run
from dlfm.evaluation.embedding import random_encoder_like
from dlfm.training.probe import PENALTIES
from dlfm.evaluation.regression import REPORTED, circular_abs_diff, mae_per_parameter
from dlfm.transfer import TransferConfig


def test_circular_difference_has_period_pi():
    assert circular_abs_diff(np.array([0.05]), np.array([math.pi - 0.05]))[0] == pytest.approx(0.1)
    assert circular_abs_diff(np.array([0.0]), np.array([math.pi / 2]))[0] == pytest.approx(math.pi / 2)
    assert circular_abs_diff(np.array([3.0]), np.array([3.0 + 2 * math.pi]))[0] == pytest.approx(0.0, abs=1e-12)


def test_angle_mae_comes_from_the_smooth_components():
    # φ = 0.01 and φ = π − 0.01 are 0.02 rad apart, not ≈ π.
    true = np.zeros((1, 7))
    predicted = np.zeros((1, 7))
    c = 0.2
    true[0, 3:5] = c * np.cos(2 * 0.01), c * np.sin(2 * 0.01)
    predicted[0, 3:5] = c * np.cos(2 * (math.pi - 0.01)), c * np.sin(2 * (math.pi - 0.01))
    metrics = mae_per_parameter(predicted, true, "test")
    assert metrics["test/mae_phi"] == pytest.approx(0.02, abs=1e-9)


@pytest.fixture
def production_encoder(tracking_uri):
    torch.manual_seed(0)
    encoder = create_encoder("conv4")
    with stage_run("multitask", "multitask-test", "transfer-test", system_metrics=False) as run_id:
        version = registry.register_encoder_version(encoder, 64, "multitask", {"val/macro_auc": 0.7}, "d" * 64, run_id)
    registry.promote(version, "production")
    return encoder


def test_transfer_runs_both_arms_per_seed_with_every_mae(production_encoder, tiny_regression_dir):
    config = TransferConfig(dataset=str(tiny_regression_dir), epochs=15, seeds="0,1", experiment_name="transfer-test")
    summary = run_transfer_stage(config)
    client = mlflow.MlflowClient()
    parent = client.get_run(summary["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["dlfm.encoder_version"] == "1"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    arms = sorted((c.data.tags["dlfm.arm"], c.data.tags["dlfm.seed"]) for c in children)
    assert arms == [("pretrained-frozen", "0"), ("pretrained-frozen", "1"), ("random-frozen", "0"), ("random-frozen", "1")]
    assert {c.data.tags["dlfm.stage"] for c in children} == {"transfer"} and parent.data.tags["dlfm.stage"] == "transfer"
    for child in children:
        for name in REPORTED:  # scored on the held-out test split (a fixed schedule: val picks nothing)
            assert f"test/mae_{name}" in child.data.metrics
        # frozen arms fit a ridge head to convergence (dlfm.training.probe): one loss, and the penalty it chose
        losses = [m.value for m in client.get_metric_history(child.info.run_id, "train/loss_regression")]
        assert len(losses) == 1 and np.isfinite(losses[0])
        assert float(child.data.params["probe_penalty"]) in PENALTIES and int(child.data.params["probe_folds"]) == 24
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)} | {
        a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"transfer_table.md", "figures/mae_bars.png", "figures/parity.png"} <= artifacts
    assert len(summary["table"]) == len(REPORTED)


def test_random_encoder_really_differs_from_the_pretrained_one(production_encoder):
    pretrained = registry.load_registered_encoder("models:/dlfm-encoder@production")
    random_encoder = random_encoder_like(pretrained, seed=0)  # the production encoder itself was seeded 0
    assert torch.equal(pretrained.body[0].weight, production_encoder.body[0].weight)
    assert not torch.equal(pretrained.body[0].weight, random_encoder.body[0].weight)


def test_non_lens_parameter_dataset_is_refused(production_encoder, tiny_classification_dir):
    with pytest.raises(DatasetError, match="fixed lens parameters"):
        run_transfer_stage(TransferConfig(dataset=str(tiny_classification_dir), epochs=2, seeds="0"))
    runs = mlflow.MlflowClient().search_runs([e.experiment_id for e in mlflow.MlflowClient().search_experiments()],
                                             "tags.`dlfm.stage` = 'transfer'")
    assert runs and all(r.info.status == "FAILED" for r in runs)
