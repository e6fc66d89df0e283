"""The shared training loop: losses, augmentation, early stopping, metrics."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from dlfm.errors import ConfigError
from dlfm.models import build_model
from dlfm.objectives import OBJECTIVES, PARTS
from dlfm.training import TrainConfig, fit
from dlfm.training.loop import SplitTensors, augment_batch
from dlfm.training.objectives import Objective

CLASSES = ("no_sub", "cdm", "axion")


def random_splits(n=24, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    make = lambda: SplitTensors(torch.rand(n, 1, size, size, generator=generator), torch.arange(n) % 3)  # noqa: E731
    return {"train": make(), "val": make(), "test": make()}


def test_recon_weight_zero_gives_exactly_the_supervised_loss():
    torch.manual_seed(0)
    model = build_model("multitask", "conv4", 3)
    images, labels = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 0])
    output = model(images)
    multitask, parts = Objective("multitask", recon_weight=0.0, label_smoothing=0.1)(output, images, labels)
    supervised, _ = Objective("supervised", label_smoothing=0.1)(output, images, labels)
    assert torch.equal(multitask, supervised)
    assert torch.equal(multitask, F.cross_entropy(output.logits, labels, label_smoothing=0.1))
    assert parts["recon_mse"] > 0


def test_uncertainty_weighting_learns_its_log_variances():
    objective = Objective("multitask", loss_balance="uncertainty")
    assert [name for name, _ in objective.named_parameters()] == ["log_vars"]


def test_augmentation_is_a_dihedral_symmetry():
    images = torch.rand(16, 1, 8, 8)
    out = augment_batch(images, torch.Generator().manual_seed(0))
    for original, augmented in zip(images, out):
        candidates = [torch.rot90(original, k, (1, 2)) for k in range(4)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(augmented, c) for c in candidates)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_fit_returns_the_shared_metric_names(objective):
    spec = OBJECTIVES[objective]
    config = TrainConfig(objective=objective, encoder="conv4", epochs=2, batch_size=8)
    result = fit(config, random_splits(), CLASSES, progress=False)
    for prefix in ("val", "test"):
        for name in (spec.total_metric, "accuracy", "macro_auc", "auc_no_sub", "auc_cdm", "auc_axion"):
            assert f"{prefix}/{name}" in result.final_metrics
        for metric in ("recon_mse", "masked_mse"):
            assert (f"{prefix}/{metric}" in result.final_metrics) == (spec.recon_metric == metric)
            assert (f"{prefix}/{metric}_mean_image" in result.final_metrics) == (spec.recon_metric == metric)
    # The objective's total has its own name; each part has the name its val metric has.
    assert {name for name in result.history[0] if name.startswith("train/")} == (
        {f"train/{spec.total_metric}"} | {f"train/{PARTS[p]}" for p in spec.parts})


def test_fit_vit_mae_logs_the_normalised_pixel_loss_beside_its_mean_image_baseline():
    config = TrainConfig(objective="mae", encoder="vit_tiny", epochs=1, batch_size=8)
    result = fit(config, random_splits(), CLASSES, progress=False)
    for prefix in ("val", "test"):
        for name in ("masked_norm_mse", "masked_norm_mse_mean_image", "masked_norm_mse_vs_mean_image", "macro_auc"):
            assert f"{prefix}/{name}" in result.final_metrics
        assert f"{prefix}/masked_mse" not in result.final_metrics  # another quantity, another name
    assert set(result.history[0]) >= {"train/loss_mae", "train/masked_norm_mse", "val/masked_norm_mse"}
    assert result.reconstructions[1].shape == (8, 1, 32, 32)


def test_same_seed_gives_the_same_result():
    config = TrainConfig(objective="supervised", encoder="conv4", epochs=2, batch_size=8, seed=3)
    first = fit(config, random_splits(), CLASSES, progress=False).history
    second = fit(config, random_splits(), CLASSES, progress=False).history
    assert first == second


def test_early_stopping_keeps_the_best_epoch():
    config = TrainConfig(objective="supervised", encoder="conv4", epochs=6, batch_size=8, patience=1, lr=1e-6)
    result = fit(config, random_splits(), CLASSES, progress=False)
    aucs = [h["val/macro_auc"] for h in result.history]
    assert result.best_epoch == 1 + aucs.index(max(aucs))
    assert len(result.history) - result.best_epoch <= 1


def test_loss_and_epoch_callback_sees_every_epoch():
    seen = []
    config = TrainConfig(objective="multitask", encoder="conv4", epochs=3, batch_size=8, patience=10)
    fit(config, random_splits(), CLASSES, on_epoch_end=lambda epoch, metrics, _: seen.append(epoch), progress=False)
    assert seen == [1, 2, 3]


@pytest.mark.parametrize("field,value,match", [
    ("epochs", 0, "epochs"), ("lr", -1.0, "lr"), ("recon_weight", -0.5, "recon_weight"),
    ("encoder", "vgg", "unknown encoder"), ("loss_balance", "magic", "loss_balance"),
])
def test_bad_config_is_refused(field, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(objective="multitask", **{field: value}).validate()


def test_cuda_request_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from dlfm.training.runtime import make_runtime

    with pytest.raises(ConfigError, match="no CUDA GPU"):
        make_runtime("cuda")


@pytest.mark.cuda
def test_cuda_amp_training_step():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    config = TrainConfig(objective="multitask", encoder="resnet18", epochs=1, batch_size=8, device="cuda")
    result = fit(config, random_splits(size=64), CLASSES, progress=False)
    assert next(result.model.parameters()).device.type == "cuda"
    assert torch.isfinite(torch.tensor(result.history[0]["train/loss_multitask"]))
