"""The shared training loop: losses, augmentation, early stopping, metrics."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from dlfm.errors import ConfigError
from dlfm.models import build_model
from dlfm.objectives import OBJECTIVES, PARTS
from dlfm.training import TrainConfig, fit
from dlfm.training.batches import augment_batch
from dlfm.training.context import SplitTensors
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
        for name in (spec.total_metric, "accuracy", "macro_auc", "auc_no_sub", "auc_cdm", "auc_axion",
                     "probe_macro_auc", "probe_accuracy"):  # the probe: the one quantity main ranks every objective on
            assert f"{prefix}/{name}" in result.final_metrics
        for metric in ("recon_mse", "masked_mse"):
            assert (f"{prefix}/{metric}" in result.final_metrics) == (spec.recon_metric == metric)
            assert (f"{prefix}/{metric}_mean_image" in result.final_metrics) == (spec.recon_metric == metric)
    # The objective's total has its own name; each part has the name its val metric has; train/lr is the schedule.
    assert {name for name in result.history[0] if name.startswith("train/")} == (
        {f"train/{spec.total_metric}", "train/lr"} | {f"train/{PARTS[p]}" for p in spec.parts})


def test_the_probe_is_measured_the_same_way_for_a_head_and_a_self_supervised_objective():
    splits = random_splits()
    supervised = fit(TrainConfig(objective="supervised", encoder="conv4", epochs=1, batch_size=8), splits, CLASSES, progress=False)
    autoencoder = fit(TrainConfig(objective="autoencoder", encoder="conv4", epochs=1, batch_size=8), splits, CLASSES,
                      progress=False)
    # probed objectives: the probe is their val/macro_auc; supervised keeps its head's AUC and logs the probe beside it
    assert autoencoder.final_metrics["val/probe_macro_auc"] == autoencoder.final_metrics["val/macro_auc"]
    assert supervised.final_metrics["val/probe_macro_auc"] != supervised.final_metrics["val/macro_auc"]
    assert 0.0 <= supervised.final_metrics["test/probe_macro_auc"] <= 1.0


def test_fit_vit_mae_logs_the_normalised_pixel_loss_beside_its_mean_image_baseline():
    # a one-block, 64-wide decoder: the metric names and shapes checked here do not depend on its size (MAE's 8 x 512
    # took most of this test's time)
    config = TrainConfig(objective="mae", encoder="vit_tiny", epochs=1, batch_size=8, decoder_dim=64, decoder_depth=1)
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


def nan_splits(bad_image: int = 5):
    """random_splits with one NaN pixel in train image ``bad_image``: the step that draws it has a NaN loss."""
    splits = random_splits()
    splits["train"].images[bad_image, 0, 3, 3] = float("nan")
    return splits


@pytest.mark.parametrize("read_every", [0, 1])
def test_non_finite_loss_is_one_line_naming_the_epoch_and_step(read_every, monkeypatch):
    from dlfm.training import context, epoch as epoch_module

    # 0: the check runs once, on the epoch's sums (no per-step read); 1: at every step, as a progress bar might.
    monkeypatch.setattr(context.TrainingContext, "mid_epoch_reads", lambda self, show_bar: read_every)
    seen = []
    config = TrainConfig(objective="supervised", encoder="conv4", epochs=2, batch_size=8)
    with pytest.raises(epoch_module.NonFiniteLossError) as error:
        fit(config, nan_splits(), CLASSES, on_epoch_end=lambda epoch, *_: seen.append(epoch), progress=False)
    message = str(error.value)
    assert "\n" not in message
    assert re.fullmatch(r"training loss became nan at epoch 1 \(step [123] of 3\); lower lr or recon_weight", message)
    assert seen == []  # the broken epoch is never checkpointed


def test_the_step_named_is_the_first_non_finite_one():
    from dlfm.training.epoch import NonFiniteLossError, raise_if_not_finite

    step_losses = torch.tensor([0.5, 0.4, float("inf"), float("nan")])
    with pytest.raises(NonFiniteLossError, match=r"became inf at epoch 7 \(step 3 of 4\)"):
        raise_if_not_finite(torch.tensor([float("nan"), 1.0]), step_losses, 4, 7)
    raise_if_not_finite(torch.tensor([1.0, 2.0]), step_losses, 4, 7)  # finite sums: no per-step read, no error


def test_host_reads_every_step_or_once_per_epoch_give_the_same_metrics():
    from dlfm.training.epoch import train_one_epoch
    from dlfm.training.loop import build_context

    config = TrainConfig(objective="multitask", encoder="conv4", epochs=1, batch_size=8)
    results = []
    for read_every in (1, 0):
        ctx = build_context(config, 3, 3, progress=False)
        ctx.read_every = read_every
        results.append(train_one_epoch(ctx, random_splits()["train"], 1))
    assert results[0] == results[1]


def test_compile_wraps_the_training_forward_and_keeps_the_results(monkeypatch):
    from dlfm.training import runtime

    monkeypatch.setattr(runtime, "COMPILE_BACKEND", "eager")  # the wiring, without minutes of code generation
    base = TrainConfig(objective="mae", encoder="conv4", epochs=2, batch_size=8, seed=1)
    plain = fit(base, random_splits(), CLASSES, progress=False)
    compiled = fit(replace(base, compile=True), random_splits(), CLASSES, progress=False)
    assert compiled.history == plain.history
    assert compiled.model.state_dict().keys() == plain.model.state_dict().keys()  # no _orig_mod. prefix in artifacts


def test_a_compiled_vit_step_reads_its_position_tables_and_never_builds_them(monkeypatch):
    """Issue 27: the sine-cosine table (float64 arange/sin/cos) is filled before the first compiled step, so no
    compiled graph contains it; it stays out of the weights."""
    from dlfm.training import runtime

    graphs = []

    def recording_backend(graph, example_inputs):
        graphs.append(graph.code)
        return graph.forward

    monkeypatch.setattr(runtime, "COMPILE_BACKEND", recording_backend)
    result = fit(TrainConfig(objective="mae", encoder="vit_tiny", epochs=1, batch_size=8, seed=1, compile=True,
                             decoder_dim=32, decoder_depth=1), random_splits(), CLASSES, progress=False)
    assert graphs and not [code for code in graphs if "float64" in code or "arange" in code]
    assert {name for name, _ in result.model.named_buffers() if "positions" in name} == {
        "encoder.positions.grid_4x4", "decoder.positions.grid_4x4"}
    assert not [key for key in result.model.state_dict() if "positions" in key]
