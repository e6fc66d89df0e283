"""Issue 27: the optimiser recipe as a table row (MAE's for a ViT mae), and a ViT MAE that learns on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from dlfm.objectives import OBJECTIVES, RECIPES
from dlfm.training import TrainConfig
from dlfm.training.context import SplitTensors
from dlfm.training.loop import build_context, fit, parameter_groups, warmup_cosine


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_every_cnn_objective_keeps_todays_optimiser(objective):
    config = TrainConfig(objective=objective, encoder="conv4", batch_size=64)  # what batch_size=auto gives off CUDA
    assert config.lr_effective == pytest.approx(1e-3)
    assert (config.weight_decay_effective, config.grad_clip_effective) == (1e-4, 1.0)
    ctx = build_context(config, 3, steps_per_epoch=10, progress=False)
    assert [group["weight_decay"] for group in ctx.optimizer.param_groups] == [1e-4]
    assert ctx.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    # no warmup: cosine from the peak, as CosineAnnealingLR did
    assert ctx.scheduler.get_last_lr()[0] == pytest.approx(1e-3)
    assert config.recipe.early_stopping


def test_vit_mae_follows_the_paper_and_scales_lr_with_the_global_batch():
    config = TrainConfig(objective="mae", encoder="vit_tiny", batch_size=256, decoder_dim=64, decoder_depth=1)
    recipe = config.recipe
    assert recipe is RECIPES["mae"] and (recipe.betas, recipe.grad_clip, recipe.early_stopping) == ((0.9, 0.95), None, False)
    assert config.lr_effective == pytest.approx(1.5e-4)
    assert TrainConfig(objective="mae", encoder="vit_tiny", batch_size=256, nproc=4).lr_effective == pytest.approx(6e-4)
    assert TrainConfig(objective="mae", encoder="vit_tiny", batch_size=128, lr=1e-3).lr_effective == pytest.approx(5e-4)
    assert TrainConfig(objective="mae", encoder="conv4").recipe is RECIPES["adamw"]  # SparK keeps today's
    ctx = build_context(config, 3, steps_per_epoch=10, progress=False)
    decay, no_decay = ctx.optimizer.param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"], decay["betas"]) == (0.05, 0.0, (0.9, 0.95))
    assert all(p.ndim >= 2 for p in decay["params"]) and any(p is ctx.model.decoder.mask_token for p in no_decay["params"])
    assert ctx.grad_clip == 0.0 and len(ctx.model.decoder.blocks) == 1 and ctx.model.decoder.width == 64
    assert ctx.scheduler.get_last_lr()[0] == 0.0  # the warmup starts at 0
    factor = warmup_cosine(100, 10)
    assert [factor(s) for s in (0, 5, 10)] == [0.0, 0.5, 1.0] and factor(55) == pytest.approx(0.5) and factor(100) == pytest.approx(0.0)


def test_no_decay_groups_follow_timm():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = parameter_groups([model], 0.05, decay_exempt=True)
    assert len(decay["params"]) == 1 and len(no_decay["params"]) == 3


def ramps(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Images that are a linear ramp in a random direction plus a little noise: every normalised patch of one image is
    the same pattern, so the visible patches tell the hidden ones, while positions alone tell nothing."""
    angle = torch.rand(n, generator=generator) * 2 * math.pi
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    ramp = torch.cos(angle)[:, None, None] * x + torch.sin(angle)[:, None, None] * y
    return (ramp + 0.05 * torch.randn(n, size, size, generator=generator))[:, None]


@pytest.mark.slow  # about 30 s a batch size on an idle 2-core CPU (minutes under load)
@pytest.mark.parametrize("batch_size", [16, 32])
def test_vit_tiny_mae_learns_beyond_positions_at_two_batch_sizes(batch_size):
    generator = torch.Generator().manual_seed(0)
    split = lambda n: SplitTensors(ramps(n, 32, generator), torch.arange(n) % 3)  # noqa: E731
    splits = {"train": split(64), "val": split(32), "test": split(32)}
    # 20 epochs: the recipe's 10 % warmup is then 2 epochs, so the per-epoch train/lr shows it rise
    config = TrainConfig(objective="mae", encoder="vit_tiny", epochs=20, batch_size=batch_size, lr=5e-3, decoder_dim=64,
                         decoder_depth=2, augment=False, device="cpu", precision="fp32", seed=0)
    assert config.lr_effective == pytest.approx(5e-3 * batch_size / 256)
    result = fit(config, splits, ("a", "b", "c"), progress=False)
    lrs = [epoch["train/lr"] for epoch in result.history]
    assert len(lrs) == 20  # a fixed length: no early stopping
    assert lrs[0] < lrs[1] == pytest.approx(config.lr_effective) and all(a > b for a, b in zip(lrs[1:], lrs[2:]))
    ratios = [epoch["val/masked_norm_mse_vs_position_mean"] for epoch in result.history]
    assert ratios[-1] < 0.8 and result.final_metrics["test/masked_norm_mse_vs_position_mean"] < 0.8, ratios
