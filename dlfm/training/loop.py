"""The training loop, written once: ``fit`` (with checkpoint state), built on ``build_context``.

One epoch is ``dlfm.training.epoch``, evaluation and the probe ``dlfm.training.evaluate``, batches
``dlfm.training.batches``, the types passed around ``dlfm.training.context``. Nothing here talks to
MLflow: ``fit`` returns metric dicts and calls ``on_epoch_end`` (which the tracking module supplies)
once per epoch.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from dlfm.models.composite import build_model
from dlfm.models.layers import prepare_position_tables
from dlfm.training.batching import channels_last_pays
from dlfm.training.config import TrainConfig
from dlfm.training.context import FitResult, SplitTensors, TrainingContext
from dlfm.training.epoch import train_one_epoch
from dlfm.training.evaluate import (EVAL_MASK_SEED, decoder_baseline, evaluate, mean_images, position_means,
                                    probe_metrics, probe_named, run_probe)
from dlfm.training.interrupt import StopRequest, TrainingInterrupted
from dlfm.training.objectives import Objective
from dlfm.training.placement import PLACEMENTS, choose_placement, free_device_memory, place_tensor, split_bytes
from dlfm.training.runtime import Runtime, compile_model, make_runtime, prefers_channels_last, seed_everything
from dlfm.training.streaming import steps_per_epoch


NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token")  # parameter names MAE keeps out of weight decay


def parameter_groups(modules: list[nn.Module], weight_decay: float, decay_exempt: bool) -> list[dict]:
    """AdamW groups: with ``decay_exempt`` (MAE, timm's ``param_groups_weight_decay``), params with ndim <= 1
    (norms, biases, learned loss weights) and position embeddings / tokens get no decay; else one group."""
    params = [(name, p) for module in modules for name, p in module.named_parameters() if p.requires_grad]
    if not decay_exempt:
        return [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    exempt = [p.ndim <= 1 or any(word in name for word in NO_DECAY_NAMES) for name, p in params]
    return [{"params": [p for (_, p), no in zip(params, exempt) if not no], "weight_decay": weight_decay},
            {"params": [p for (_, p), no in zip(params, exempt) if no], "weight_decay": 0.0}]


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """lr factor at a step: linear from 0 over ``warmup_steps``, then a half-cycle cosine to 0 (MAE's lr_sched)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    return factor


def build_context(config: TrainConfig, num_classes: int, steps_per_epoch: int, runtime: Runtime | None = None, progress: bool = True) -> TrainingContext:
    """Seeded model, objective, AdamW and schedule for ``config``."""
    runtime = runtime or make_runtime(config.device)
    generator = seed_everything(config.seed)
    model = build_model(config.objective, config.encoder, num_classes, config.encoder_kwargs, config.decoder_dim,
                        config.decoder_depth, config.mask_ratio).to(runtime.device)
    if runtime.channels_last and prefers_channels_last(model):
        model = model.to(memory_format=torch.channels_last)  # NHWC convolution kernels (tensor cores on CUDA)
    objective = Objective(config.objective, config.recon_weight, config.loss_balance, config.label_smoothing,
                          config.patch_size, config.mask_ratio, config.encoder_kind).to(runtime.device)
    recipe, lr = config.recipe, config.lr_effective
    groups = parameter_groups([model, objective], config.weight_decay_effective, recipe.decay_exempt)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=recipe.betas)
    total_steps = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        # its own warmup (30 % of steps) and momentum cycle replace the recipe's warmup and beta1
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, round(recipe.warmup_share * total_steps)))
    ddp_model = None
    if runtime.world_size > 1:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    ctx = TrainingContext(config, model, objective, optimizer, scheduler, runtime, generator, progress, ddp_model,
                          grad_clip=config.grad_clip_effective)
    # The training forward only: evaluation runs the plain model (eval mode and its batch sizes would recompile).
    ctx.compiled = compile_model(ddp_model or model) if config.compile else None
    return ctx


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a per-epoch line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float], monitor: str, seconds: float, eta: float) -> str:
    """One line per epoch that stays in logs (CI, tee, nohup): the train total, key val metrics, time and ETA."""
    train = [(k, v) for k, v in metrics.items() if k.startswith("train/loss_")][:1]  # the objective's total
    wanted = (monitor, "val/accuracy", "val/macro_auc", "val/recon_mse", "val/masked_mse", "val/masked_norm_mse",
              "val/masked_norm_mse_vs_position_mean")
    val = [(k, metrics[k]) for k in dict.fromkeys(wanted) if k in metrics]
    parts = [f"{name} {value:.4f}" for name, value in train + val]
    width = len(str(epochs))
    return f"epoch {epoch:>{width}}/{epochs}  " + "  ".join(parts) + f"  {seconds:.1f}s  ETA {format_duration(eta)}"


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` improves on ``best`` for a min or max metric."""
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def checkpoint_state(ctx: TrainingContext, epoch: int, best_value: float | None, best_epoch: int, best_weights: dict, history: list) -> dict:
    """Everything needed to resume after ``epoch``; loadable with torch.load(weights_only=True)."""
    return {
        "epoch": epoch,
        "config": ctx.config.to_dict(),
        "model": ctx.model.state_dict(),
        "objective": ctx.objective.state_dict(),
        "optimizer": ctx.optimizer.state_dict(),
        "scheduler": ctx.scheduler.state_dict(),
        "scaler": ctx.runtime.scaler.state_dict(),
        "best_value": best_value,
        "best_epoch": best_epoch,
        "best_weights": best_weights,
        "history": history,
        "rng": {
            "torch": torch.get_rng_state(),
            "generator": ctx.generator.get_state(),
            "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
            "numpy_pos": int(np.random.get_state()[2]),
        },
    }


# Scheduler fields sized by the total number of steps: a resume with more epochs keeps the fresh ones.
SCHEDULE_LENGTH_KEYS = ("T_max", "total_steps", "_schedule_phases")


def restore_state(ctx: TrainingContext, state: dict) -> None:
    """Load a checkpoint made by ``checkpoint_state`` into ``ctx`` (its schedule stretched if epochs grew)."""
    ctx.model.load_state_dict(state["model"])
    ctx.objective.load_state_dict(state["objective"])
    ctx.optimizer.load_state_dict(state["optimizer"])
    fresh = ctx.scheduler.state_dict()
    ctx.scheduler.load_state_dict({**state["scheduler"], **{k: fresh[k] for k in SCHEDULE_LENGTH_KEYS if k in fresh}})
    ctx.runtime.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    ctx.generator.set_state(state["rng"]["generator"])
    np.random.set_state(("MT19937", state["rng"]["numpy"].numpy().astype(np.uint32), state["rng"]["numpy_pos"]))


def fit(
    config: TrainConfig,
    splits: dict[str, SplitTensors],
    class_names: tuple[str, ...],
    on_epoch_end: Callable[[int, dict[str, float], Callable[[], dict]], None] | None = None,
    resume_state: dict | None = None,
    runtime: Runtime | None = None,
    progress: bool = True,
    stop: StopRequest | None = None,
    probe_splits: dict[str, SplitTensors] | None = None,
    placement: str | None = None,
) -> FitResult:
    """Train with early stopping on ``config.monitor``; evaluate the best weights on val and test.

    ``on_epoch_end(epoch, metrics, make_checkpoint)`` runs after every epoch (metrics logging,
    checkpoints, Optuna pruning); it may raise to stop training. ``make_checkpoint`` is None when no
    checkpoint is due (``config.checkpoint_every_s``); a stop mid-epoch whose last completed epoch has
    none calls it once more with empty metrics and that epoch's checkpoint. ``resume_state`` (a checkpoint)
    continues at its next epoch. When ``stop`` is set (by a signal), the loop raises
    ``TrainingInterrupted`` after the current step, leaving the last completed epoch's checkpoint
    (a streamed split, ``dlfm.training.streaming``: the weights now and the windows of shards trained on, to skip on resume).
    A probed (self-supervised) objective trains on ``splits`` and gets its classification
    metrics from a linear probe on ``probe_splits`` (the labelled downstream set; default ``splits``).
    The splits are placed once (``placement``: device | pinned | host; None chooses by size and free
    device memory) and ``FitResult.data_placement`` says where.
    """
    import time

    runtime = runtime or make_runtime(config.device)
    splits, probe_splits, placement = place_splits(splits, probe_splits or splits, runtime, placement)
    train = splits["train"]
    config = config.with_batch_resolved(runtime.device.type, train)  # batch_size=auto: its number, saved in checkpoints
    runtime.channels_last = channels_last_pays(runtime.device.type, config.batch_size)
    steps = steps_per_epoch(train, config.batch_size, runtime.rank, runtime.world_size)
    ctx = build_context(config, len(class_names), steps, runtime, progress)
    ctx.stop = stop or StopRequest()
    ctx.placement = placement
    ctx.mean_images = {size: mean.to(runtime.device) for size, mean in mean_images(train).items()}
    # a ViT's position table of every grid before the first step: its float64 build never enters a compiled graph
    prepare_position_tables(ctx.model, ctx.mean_images, runtime.device)
    if ctx.objective.normalised:
        ctx.position_means = position_means(train, config.patch_size, runtime.device)
    if ctx.model.decoder is not None:  # before a resume restores the saved one
        ctx.model.decoder.set_baseline(decoder_baseline(ctx.mean_images))
    monitor, mode = config.monitor
    history: list[dict[str, float]] = []
    best_value, best_epoch, best_weights = None, 0, copy.deepcopy(ctx.model.state_dict())
    start_epoch = 1
    if resume_state is not None:
        restore_state(ctx, resume_state)
        start_epoch = resume_state["epoch"] + 1
        if "stream" in resume_state:  # stopped mid-epoch on a streamed split: skip the shards it had trained on
            ctx.stream_skip = {resume_state["stream"]["epoch"]: set(resume_state["stream"]["windows_done"])}
        best_value, best_epoch = resume_state["best_value"], resume_state["best_epoch"]
        best_weights, history = resume_state["best_weights"], list(resume_state["history"])
        if config.recipe.early_stopping and resume_state["epoch"] - best_epoch >= config.patience:
            start_epoch = config.epochs + 1  # it had already stopped early; killed before the final evaluation
    train_seconds, train_images, epoch_seconds = 0.0, 0, []
    talk = progress and runtime.is_main_process
    last_saved, saved_at = start_epoch - 1, time.monotonic()  # a resume starts from a saved epoch
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        try:
            metrics = train_one_epoch(ctx, train, epoch)
        except TrainingInterrupted:
            done = epoch - 1
            streamed = ctx.stream_done[0] == epoch and ctx.stream_done[1]
            if on_epoch_end is not None and streamed:  # mid-epoch, at shard granularity: the weights now, the shards done
                position = {"epoch": epoch, "windows_done": sorted(ctx.stream_done[1])}
                on_epoch_end(done, {}, lambda: {**checkpoint_state(ctx, done, best_value, best_epoch, best_weights, history),
                                                "stream": position})
            elif on_epoch_end is not None and last_saved < epoch - 1:  # the last completed epoch has no checkpoint yet
                on_epoch_end(done, {}, lambda: checkpoint_state(ctx, done, best_value, best_epoch, best_weights, history))
            raise
        train_seconds += time.perf_counter() - started
        train_images += train.num_images
        metrics.update(evaluate(ctx, splits["val"], class_names, "val", embed=False).metrics)
        metrics["train/lr"] = ctx.scheduler.get_last_lr()[0]  # the lr of the epoch's last step: the warmup rises, then decays
        history.append(metrics)
        epoch_seconds.append(time.perf_counter() - started)
        if talk:  # printed whether or not stdout is a terminal; the tqdm bar is the TTY-only extra
            eta = sum(epoch_seconds) / len(epoch_seconds) * (config.epochs - epoch)
            print(epoch_line(epoch, config.epochs, metrics, monitor, epoch_seconds[-1], eta), flush=True)
        if is_better(metrics[monitor], best_value, mode):
            best_value, best_epoch = metrics[monitor], epoch
            best_weights = copy.deepcopy(ctx.model.state_dict())
        stopping = ctx.stop.requested(runtime.world_size, runtime.device)
        final = epoch == config.epochs or (config.recipe.early_stopping and epoch - best_epoch >= config.patience)
        # A checkpoint (hundreds of MB for a ViT, fsynced and copied to MLflow) at most every checkpoint_every_s,
        # and always after the last epoch and on a stop, so that a stop resumes exactly where it ended.
        save = final or stopping or time.monotonic() - saved_at >= config.checkpoint_every_s
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, (lambda: checkpoint_state(ctx, epoch, best_value, best_epoch, best_weights, history))
                         if save else None)
        if save:
            last_saved, saved_at = epoch, time.monotonic()
        if stopping:
            raise TrainingInterrupted(ctx.stop.signal_name, epoch)
        if config.recipe.early_stopping and epoch - best_epoch >= config.patience:
            break
    ctx.model.load_state_dict(best_weights)
    val = evaluate(ctx, splits["val"], class_names, "val")  # FitResult carries the final embeddings
    test = evaluate(ctx, splits["test"], class_names, "test")
    if ctx.objective.spec.probed:
        val, test = probe_metrics(ctx, splits, probe_splits, val, test, class_names)
    else:  # the head's metrics stay val/…; the probe's go beside them, measured as for a probed objective
        probed = run_probe(ctx, splits, probe_splits, val, test, class_names)
        for split, out in (("val", val), ("test", test)):
            out.metrics.update(probe_named({split: probed[split]}))
    reconstructions = None
    if ctx.model.decoder is not None:
        with torch.no_grad():
            sample = splits["val"].groups[0].images[:8].to(runtime.device)
            mask = ctx.objective.make_mask(sample, torch.Generator().manual_seed(EVAL_MASK_SEED))
            reconstruction = ctx.model(sample, mask).reconstruction.float().cpu().numpy()
            reconstructions = (sample.cpu().numpy(), reconstruction, None if mask is None else mask.cpu().numpy())
    final = {**val.metrics, **test.metrics}
    speed = train_images / train_seconds if train_seconds else 0.0
    return FitResult(ctx.model, history, best_epoch, final, val, test, reconstructions, speed, placement)


def place_splits(splits: dict[str, SplitTensors], probe_splits: dict[str, SplitTensors], runtime: Runtime,
                 placement: str | None = None) -> tuple[dict, dict, str]:
    """``splits`` and ``probe_splits`` placed together (shared splits stay shared), and the placement chosen."""
    unique = {id(split): split for split in [*splits.values(), *probe_splits.values()]}
    if placement is None:
        placement = choose_placement(split_bytes(unique.values()), runtime.device.type, free_device_memory(runtime.device))
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; choose one of {', '.join(PLACEMENTS)}")
    placed = {key: split.placed(lambda tensor: place_tensor(tensor, runtime.device, placement)) for key, split in unique.items()}
    new_splits = {name: placed[id(split)] for name, split in splits.items()}
    new_probe = new_splits if probe_splits is splits else {name: placed[id(split)] for name, split in probe_splits.items()}
    return new_splits, new_probe, placement
