"""The training loop, written once: ``train_one_epoch``, ``evaluate`` and ``fit``.

Nothing here talks to MLflow: ``fit`` returns metric dicts and calls ``on_epoch_end`` (which
the tracking module supplies) once per epoch.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dlfm.models.composite import LensModel, build_model
from dlfm.objectives import PARTS
from dlfm.training.config import TrainConfig
from dlfm.training.interrupt import StopRequest, TrainingInterrupted
from dlfm.training.metrics import classification_metrics
from dlfm.training.objectives import Objective
from dlfm.training.placement import FEEDERS, PLACEMENTS, choose_placement, free_device_memory, place_tensor, split_bytes
from dlfm.training.batching import channels_last_pays
from dlfm.training.runtime import Runtime, compile_model, make_runtime, prefers_channels_last, seed_everything


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


# Steps between mid-epoch host reads of the running loss sums, when something needs them: the progress bar's
# figure, an early non-finite check, and the stop vote of DDP ranks (an all-reduce). Each read waits for the
# device; without a bar on one process the only read is the one at the epoch's end.
HOST_READ_EVERY = 25


@dataclass
class SplitTensors:
    images: torch.Tensor  # (n, 1, H, W) float32, normalised
    labels: torch.Tensor  # (n,) int64

    @property
    def groups(self) -> tuple["SplitTensors", ...]:
        """The split's groups of one image size each: itself."""
        return (self,)

    def placed(self, place: Callable[[torch.Tensor], torch.Tensor]) -> "SplitTensors":
        """The same split with ``place`` applied to each tensor."""
        return SplitTensors(place(self.images), place(self.labels))


@dataclass
class MultiSizeSplit:
    """A split of several image sizes (a multi-instrument corpus): one SplitTensors per instrument.

    The loop batches each group apart (``group_batches``), so a batch never mixes image sizes; the
    split's rows are the groups' rows one block after the other (labels, probabilities, embeddings).
    """

    groups: tuple[SplitTensors, ...]  # one per instrument, each of one image size
    names: tuple[str, ...]  # the instrument of each group

    @property
    def labels(self) -> torch.Tensor:
        """(n,) int64 labels of every group, in group order."""
        return torch.cat([group.labels for group in self.groups])

    def placed(self, place: Callable[[torch.Tensor], torch.Tensor]) -> "MultiSizeSplit":
        """The same split with ``place`` applied to each group's tensors."""
        return MultiSizeSplit(tuple(group.placed(place) for group in self.groups), self.names)


@dataclass
class TrainingContext:
    """Everything one epoch needs, passed around instead of a long argument list."""

    config: TrainConfig
    model: LensModel
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    runtime: Runtime
    generator: torch.Generator  # shuffling and augmentation
    progress: bool = True
    ddp_model: nn.Module | None = None  # the DistributedDataParallel wrapper, when world_size > 1
    stop: StopRequest = field(default_factory=StopRequest)  # set by SIGINT/SIGTERM; checked after each step (each read point under DDP)
    mean_images: dict = field(default_factory=dict)  # (H, W) → (1, 1, H, W) mean train image of that size: the reconstruction baseline
    # (H, W) → (1, 1, H, W) mean per-patch-normalised train image: the position-only predictor of MAE's normalised loss
    position_means: dict = field(default_factory=dict)
    compiled: nn.Module | None = None  # torch.compile of the (DDP-wrapped) model, with config.compile
    placement: str = "host"  # where the split tensors live: a key of dlfm.training.placement.FEEDERS
    read_every: int | None = None  # steps between mid-epoch host reads (0 = at the epoch's end only; None = HOST_READ_EVERY when a bar or DDP needs them)
    feeders: dict = field(default_factory=dict)  # id(split) → (split, its batch feeder), built once per split
    grad_clip: float = 0.0  # max global gradient norm (0 = off): the config's, else its recipe's

    @property
    def forward_model(self) -> nn.Module:
        if self.compiled is not None:
            return self.compiled
        return self.ddp_model if self.ddp_model is not None else self.model

    def batches(self, data: SplitTensors, order: list[torch.Tensor]):
        """(host index, images, labels) of each batch of ``order``, images and labels on the device."""
        if id(data) not in self.feeders:  # the split is kept alongside, so its id cannot be reused meanwhile
            self.feeders[id(data)] = (data, FEEDERS[self.placement](data.images, data.labels, self.runtime.device))
        return self.feeders[id(data)][1].batches(order)

    def grouped_batches(self, data, schedule: list[tuple[int, torch.Tensor]]):
        """(group, host index, images, labels) of each (group, index) batch of ``schedule``, in its order.

        Each group keeps its own feeder stream (its pinned staging buffers and look-ahead), so a schedule
        that alternates between image sizes still copies each group's next batch ahead.
        """
        streams = [self.batches(group, [index for g, index in schedule if g == k]) for k, group in enumerate(data.groups)]
        for g, _ in schedule:
            yield (g, *next(streams[g]))

    def mean_image_for(self, images: torch.Tensor) -> torch.Tensor:
        """The mean train image of ``images``' size (resized from the largest one for a size training never saw)."""
        size = tuple(images.shape[-2:])
        if size not in self.mean_images:
            largest = max(self.mean_images.values(), key=lambda mean: mean.shape[-1])
            self.mean_images[size] = nn.functional.interpolate(largest, size=size, mode="bilinear", align_corners=False)
        return self.mean_images[size]

    def mid_epoch_reads(self, show_bar: bool) -> int:
        """Steps between mid-epoch host reads of the running sums (0: only at the epoch's end)."""
        if self.read_every is not None:
            return self.read_every
        return HOST_READ_EVERY if show_bar or self.runtime.world_size > 1 else 0


@dataclass
class EvalOutput:
    metrics: dict[str, float]
    probs: np.ndarray | None  # (n, num_classes) softmax, None without a classification head
    labels: np.ndarray
    embeddings: np.ndarray | None  # (n, embed_dim); None when evaluate was asked for metrics only


@dataclass
class FitResult:
    model: LensModel  # with the best epoch's weights
    history: list[dict[str, float]]  # one metric dict per epoch
    best_epoch: int
    final_metrics: dict[str, float]  # val/* at the best epoch (or from the probe) plus test/*
    val: EvalOutput
    test: EvalOutput
    reconstructions: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None  # (originals, reconstructions, masks) of a few val images
    images_per_second: float = 0.0
    data_placement: str = "host"  # where the splits lived: device | pinned | host (dlfm.training.placement)


def augment_batch(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random rot90 (k = 0..3) and horizontal flip per image: the dihedral symmetries of a lens image.

    Drawn on the images' device (torch's seeded RNG there; ``generator``, a host one, when given) and applied
    with ``torch.where`` over the three rotations: no index list, no host read, no data-dependent shape.
    """
    n, device = images.shape[0], images.device
    if generator is None:
        turns, flips = torch.randint(0, 4, (n,), device=device), torch.rand(n, device=device) < 0.5
    else:
        turns = torch.randint(0, 4, (n,), generator=generator).to(device)
        flips = (torch.rand(n, generator=generator) < 0.5).to(device)
    out = images
    square = images.shape[-1] == images.shape[-2]
    for k in (1, 2, 3) if square else (2,):  # a quarter turn of a non-square image would change its shape
        out = torch.where((turns == k)[:, None, None, None], torch.rot90(images, k, dims=(2, 3)), out)
    return torch.where(flips[:, None, None, None], out.flip(-1), out)


def batch_indices(n: int, batch_size: int, generator: torch.Generator | None, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    """Index batches for one epoch; shuffled when a generator is given, sharded across ranks like DistributedSampler."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    if world_size > 1:
        padded = math.ceil(n / world_size) * world_size
        order = torch.cat([order, order[: padded - n]])[rank::world_size]
    return list(order.split(batch_size))


def group_batches(data, batch_size: int, generator: torch.Generator | None, rank: int = 0,
                  world_size: int = 1) -> list[tuple[int, torch.Tensor]]:
    """(group, index) batches of one epoch: each image-size group batched apart (``batch_indices``), then the batches of
    all groups shuffled together with the same generator; one group gives exactly ``batch_indices``' batches."""
    batches = [(g, index) for g, group in enumerate(data.groups)
               for index in batch_indices(len(group.labels), batch_size, generator, rank, world_size)]
    if generator is None or len(data.groups) == 1:
        return batches
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def mean_images(data) -> dict[tuple[int, int], torch.Tensor]:
    """(H, W) → the mean image (1, 1, H, W) of every image of that size in ``data`` (groups of one size pooled)."""
    by_size: dict[tuple[int, int], list[torch.Tensor]] = {}
    for group in data.groups:
        by_size.setdefault(tuple(group.images.shape[-2:]), []).append(group.images)
    return {size: (groups[0].mean(dim=0, keepdim=True) if len(groups) == 1 else
                   sum(images.sum(dim=0, keepdim=True) for images in groups) / sum(len(images) for images in groups))
            for size, groups in by_size.items()}


def position_means(data, patch_size: int, device: torch.device, chunk: int = 1024) -> dict[tuple[int, int], torch.Tensor]:
    """(H, W) → the mean per-patch-normalised image (1, 1, H, W) of ``data``: for each patch position, the mean
    normalised patch (MAE's norm_pix target). As a prediction it knows positions and nothing of the image: the
    baseline a masked normalised loss must beat (ratio 1.0 = the decoder ignores the encoder). Computed once."""
    from dlfm.models.heads import expand_cells, patch_statistics

    sums: dict[tuple[int, int], list] = {}
    for group in data.groups:
        size = tuple(group.images.shape[-2:])
        total = sums.setdefault(size, [0.0, 0])
        for images in group.images.split(chunk):
            images = images.to(device).float()
            mean, std = patch_statistics(images, patch_size)
            normalised = (images - expand_cells(mean, patch_size, size)) / expand_cells(std, patch_size, size)
            total[0] = total[0] + normalised.sum(dim=0, keepdim=True)
            total[1] += len(images)
    return {size: total / count for size, (total, count) in sums.items()}


def position_mean_prediction(position_mean: torch.Tensor, images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The position-only predictor of ``images`` in image units: the mean normalised patch de-normalised with each
    target patch's own statistics, as ``MaskedTokenDecoder`` returns its predictions."""
    from dlfm.models.heads import expand_cells, patch_statistics

    size = images.shape[-2:]
    mean, std = patch_statistics(images, patch_size)
    return position_mean * expand_cells(std, patch_size, size) + expand_cells(mean, patch_size, size)


def decoder_baseline(means: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor:
    """The decoder's one baseline: the mean image, or over several sizes the mean of each size's mean resized to the largest."""
    largest = max(means, key=lambda size: size[0] * size[1])
    resized = [nn.functional.interpolate(mean, size=largest, mode="bilinear", align_corners=False) if size != largest else mean
               for size, mean in means.items()]
    return torch.stack(resized).mean(dim=0)


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
    order = group_batches(data, ctx.config.batch_size, ctx.generator, ctx.runtime.rank, ctx.runtime.world_size)
    device, world_size = ctx.runtime.device, ctx.runtime.world_size
    sums = torch.zeros(len(names), dtype=sum_dtype(device), device=device)  # loss × images, summed
    step_losses = torch.zeros(len(order), device=device)  # read only to name the step of a non-finite loss
    show_bar = ctx.progress and sys.stderr.isatty()
    read_every = ctx.mid_epoch_reads(show_bar)
    bar = tqdm(total=len(order), desc=f"epoch {epoch}", leave=False, disable=not show_bar)
    seen = 0
    for step, (_, index, images, labels) in enumerate(ctx.grouped_batches(data, order)):
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
        batch = len(index)
        seen += batch
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
    raise_if_not_finite(sums, step_losses, len(order), epoch)
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


EVAL_MASK_SEED = 12345  # masks for val/test are the same every epoch, so masked_mse is comparable across epochs


@torch.no_grad()
def evaluate(ctx: TrainingContext, data: SplitTensors, class_names: tuple[str, ...], prefix: str,
             embed: bool = True) -> EvalOutput:
    """Loss, reconstruction MSE (with the mean-image baseline) and classification metrics of one split, in eval mode.

    Embeddings always come from the unmasked image: they feed the probe, as they feed transfer. A masked
    objective needs a second encoder pass for them, so the per-epoch validation (``embed=False``) skips them.
    """
    ctx.model.eval()
    ctx.objective.eval()
    spec = ctx.objective.spec
    part = ctx.objective.recon_metric
    sums = torch.zeros(4, dtype=sum_dtype(ctx.runtime.device), device=ctx.runtime.device)  # loss, recon, baseline, position baseline (× images)
    zero = torch.zeros((), device=ctx.runtime.device)
    probs, embeddings = [], []
    mask_generator = torch.Generator().manual_seed(EVAL_MASK_SEED)
    order = group_batches(data, max(ctx.config.batch_size, 128), None)
    for _, index, images, labels in ctx.grouped_batches(data, order):
        mask = ctx.objective.make_mask(images, mask_generator)
        with ctx.runtime.autocast():
            output = ctx.model(images, mask)
            loss, parts = ctx.objective(output, images, labels, mask)
            if embed:
                embeddings.append((output.embedding if mask is None else ctx.model.encoder(images)).float())
        recon, baseline_mse, position_mse = zero, zero, zero
        if spec.decodes:
            recon = parts[part]
            baseline = ctx.mean_image_for(images).expand_as(images)
            baseline_mse = ctx.objective.reconstruction_error(baseline, images, mask)
        if ctx.objective.normalised and tuple(images.shape[-2:]) in ctx.position_means:
            predicted = position_mean_prediction(ctx.position_means[tuple(images.shape[-2:])], images, ctx.objective.patch_size)
            position_mse = ctx.objective.reconstruction_error(predicted, images, mask)
        sums += torch.stack([loss.detach().float(), recon.float(), baseline_mse.float(), position_mse.float()]).to(sums.dtype) * len(index)
        if output.logits is not None:
            probs.append(torch.softmax(output.logits.float(), dim=1))
    labels_all = data.labels
    n = len(labels_all)
    loss_sum, recon_sum, baseline_sum, position_sum = sums.tolist()  # the one read of this pass
    metrics = {f"{prefix}/{spec.total_metric}": loss_sum / n}
    if spec.decodes:
        name = f"{prefix}/{part}"
        metrics[name] = recon_sum / n
        metrics[f"{name}_mean_image"] = baseline_sum / n  # the MSE of predicting the mean train image
        metrics[f"{name}_vs_mean_image"] = recon_sum / max(baseline_sum, 1e-12)
    if position_sum > 0:  # MAE's normalised loss: the baseline that knows positions only (1.0 = nothing learned)
        metrics[f"{prefix}/{part}_position_mean"] = position_sum / n
        metrics[f"{prefix}/{part}_vs_position_mean"] = recon_sum / position_sum
    labels_np = labels_all.cpu().numpy()
    probs_np = torch.cat(probs).cpu().numpy() if probs else None
    if probs_np is not None:
        metrics.update(classification_metrics(probs_np, labels_np, class_names, prefix))
    return EvalOutput(metrics, probs_np, labels_np, torch.cat(embeddings).cpu().numpy() if embed else None)


def linear_probe(train: EvalOutput, others: dict[str, EvalOutput], class_names: tuple[str, ...], seed: int) -> dict[str, EvalOutput]:
    """Logistic regression on frozen embeddings: classification metrics of self-supervised objectives (metrics only)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(train.embeddings, train.labels)
    probed = {}
    for prefix, output in others.items():
        probs = probe.predict_proba(output.embeddings)
        metrics = classification_metrics(probs, output.labels, class_names, prefix)
        probed[prefix] = EvalOutput(metrics, probs, output.labels, output.embeddings)
    return probed


PROBE_METRICS = ("macro_auc", "accuracy")  # logged by every objective as <split>/probe_<name>: the one quantity main ranks on


def run_probe(ctx: TrainingContext, splits: dict, probe_splits: dict, val: EvalOutput, test: EvalOutput,
              class_names: tuple[str, ...]) -> dict[str, EvalOutput]:
    """The linear probe on frozen embeddings of ``probe_splits`` (train → val, test), whatever the objective."""
    same = probe_splits is splits
    train_out = evaluate(ctx, probe_splits["train"], class_names, "train")
    downstream = {"val": val if same else evaluate(ctx, probe_splits["val"], class_names, "val"),
                  "test": test if same else evaluate(ctx, probe_splits["test"], class_names, "test")}
    return linear_probe(train_out, downstream, class_names, ctx.config.seed)


def probe_named(probed: dict[str, EvalOutput]) -> dict[str, float]:
    """<split>/probe_<metric>: the probe's numbers under names every objective shares (a head's AUC is another quantity)."""
    return {f"{split}/probe_{name}": out.metrics[f"{split}/{name}"] for split, out in probed.items() for name in PROBE_METRICS}


def probe_metrics(ctx: TrainingContext, splits: dict, probe_splits: dict, val: EvalOutput, test: EvalOutput,
                  class_names: tuple[str, ...]) -> tuple[EvalOutput, EvalOutput]:
    """val/test outputs of a probed objective: its own losses plus a linear probe's classification on ``probe_splits``.

    An unlabelled ``probe_splits`` (one class in train) has nothing to probe: the objective's own losses stand alone.
    """
    if probe_splits["train"].labels.unique().numel() < 2:
        return val, test
    probed = run_probe(ctx, splits, probe_splits, val, test, class_names)
    own = {"val": val, "test": test}
    return tuple(EvalOutput({**own[name].metrics, **probed[name].metrics, **probe_named({name: probed[name]})},
                            probed[name].probs, probed[name].labels, probed[name].embeddings) for name in ("val", "test"))


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
    ``TrainingInterrupted`` after the current step, leaving the last completed epoch's checkpoint.
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
    steps = len(group_batches(train, config.batch_size, None, runtime.rank, runtime.world_size))
    ctx = build_context(config, len(class_names), steps, runtime, progress)
    ctx.stop = stop or StopRequest()
    ctx.placement = placement
    ctx.mean_images = {size: mean.to(runtime.device) for size, mean in mean_images(train).items()}
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
            if on_epoch_end is not None and last_saved < epoch - 1:  # the last completed epoch has no checkpoint yet
                done = epoch - 1
                on_epoch_end(done, {}, lambda: checkpoint_state(ctx, done, best_value, best_epoch, best_weights, history))
            raise
        train_seconds += time.perf_counter() - started
        train_images += len(train.labels)
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
