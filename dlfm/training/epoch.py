"""One training epoch: ``train_one_epoch``, its running loss sums and the non-finite check."""

from __future__ import annotations

import sys

import torch
from torch import nn
from tqdm.auto import tqdm

from dlfm.objectives import PARTS
from dlfm.training.batches import augment_batch
from dlfm.training.context import SplitTensors, TrainingContext
from dlfm.training.interrupt import TrainingInterrupted
from dlfm.training.objectives import Objective
from dlfm.training.runtime import Runtime
from dlfm.training.streaming import epoch_batches


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""



def loss_names(objective: Objective) -> list[str]:
    """The objective's total and its parts (the names ``Objective.forward`` keys them by), in the running sums' order."""
    return [objective.spec.total_metric, *([PARTS["cls"]] if objective.use_cls else []),
            *([objective.recon_metric] if objective.use_recon else [])]


def raise_if_not_finite(sums: torch.Tensor, step_losses: torch.Tensor, steps: int, epoch: int) -> None:
    """NonFiniteLossError naming the first non-finite step's loss, when the running sums are not all finite.

    The sums are checked once (a read the epoch makes anyway); the per-step detail is read only on failure.
    """
    if bool(torch.isfinite(sums).all()):
        return
    bad = (~torch.isfinite(step_losses[:steps])).nonzero()
    step = int(bad[0]) if len(bad) else steps - 1  # a finite loss with a non-finite part: name the last step
    value = float(step_losses[step])
    raise NonFiniteLossError(f"training loss became {value} at epoch {epoch} (step {step + 1} of {len(step_losses)}); "
                             "lower lr or recon_weight")


def train_one_epoch(ctx: TrainingContext, data: SplitTensors, epoch: int) -> dict[str, float]:
    """One pass over the train split; returns train/loss_<objective> and its parts, averaged over images.

    The running sums stay on the device and are read at the epoch's end (and every few steps only when a
    progress bar or DDP's stop vote needs them), so no step waits for the device.
    """
    ctx.model.train()
    ctx.objective.train()
    names = loss_names(ctx.objective)
    steps, batches = epoch_batches(ctx, data, epoch)  # in memory, or streamed from shards
    device, world_size = ctx.runtime.device, ctx.runtime.world_size
    sums = torch.zeros(len(names), dtype=sum_dtype(device), device=device)  # loss × images, summed
    step_losses = torch.zeros(steps, device=device)  # read only to name the step of a non-finite loss
    show_bar = ctx.progress and sys.stderr.isatty()
    read_every = ctx.mid_epoch_reads(show_bar)
    bar = tqdm(total=steps, desc=f"epoch {epoch}", leave=False, disable=not show_bar)
    seen = 0
    for step, (batch, images, labels, window_done) in enumerate(batches):
        if ctx.config.augment:
            images = augment_batch(images)  # drawn on the device: the step has no host work
        mask = ctx.objective.make_mask(images, None)
        with ctx.runtime.autocast():
            output = ctx.forward_model(images, mask)
            loss, parts = ctx.objective(output, images, labels, mask)
        ctx.optimizer.zero_grad(set_to_none=True)
        ctx.runtime.scaler.scale(loss).backward()
        if ctx.grad_clip > 0:
            ctx.runtime.scaler.unscale_(ctx.optimizer)
            nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.grad_clip)
        ctx.runtime.scaler.step(ctx.optimizer)
        ctx.runtime.scaler.update()
        ctx.scheduler.step()
        seen += batch
        if window_done is not None:  # a streamed window of shards is trained on: a stop from here on skips it
            ctx.stream_done[1].add(window_done)
        values = torch.stack([loss.detach(), *(parts[name] for name in names[1:])]).float()
        sums += values.to(sums.dtype) * batch
        step_losses[step] = values[0]
        bar.update(1)
        read_point = read_every > 0 and (step + 1) % read_every == 0
        if read_point and world_size == 1:  # DDP ranks check after summing across ranks, so all of them raise together
            raise_if_not_finite(sums, step_losses, step + 1, epoch)
        if read_point and show_bar:
            bar.set_postfix(loss=f"{float(sums[0]) / seen:.4f}")
        # One process reads a flag (free); DDP ranks vote with an all-reduce, so only at the read points.
        if (world_size == 1 or read_point) and ctx.stop.requested(world_size, device):
            # The partial epoch is dropped: resuming from the last completed epoch reproduces an uninterrupted run.
            raise TrainingInterrupted(ctx.stop.signal_name, epoch - 1)
    bar.close()
    if world_size > 1:
        torch.distributed.all_reduce(sums)  # every rank then sees a non-finite loss of any rank, and raises with it
        seen *= world_size
    raise_if_not_finite(sums, step_losses, steps, epoch)
    return {f"train/{name}": value / seen for name, value in zip(names, sums.tolist())}


def sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for running sums (as the Python floats they replace), float32 on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def average_across_ranks(metrics: dict[str, float], runtime: Runtime) -> dict[str, float]:
    """Mean of each metric over DDP ranks (identity on one process)."""
    if runtime.world_size == 1:
        return metrics
    names = sorted(metrics)
    values = torch.tensor([metrics[n] for n in names], dtype=torch.float64, device=runtime.device)
    torch.distributed.all_reduce(values)
    return {n: float(v) / runtime.world_size for n, v in zip(names, values.tolist())}
