"""What the loop passes around: the split tensors, the ``TrainingContext`` of one run, and its outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from dlfm.models.composite import LensModel
from dlfm.training.config import TrainConfig
from dlfm.training.interrupt import StopRequest
from dlfm.training.objectives import Objective
from dlfm.training.placement import FEEDERS
from dlfm.training.runtime import Runtime

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

    @property
    def num_images(self) -> int:
        return len(self.labels)

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

    @property
    def num_images(self) -> int:
        return sum(len(group.labels) for group in self.groups)

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
    stream_skip: dict = field(default_factory=dict)  # epoch → windows of shards a resumed run already trained on (streamed splits)
    stream_done: tuple = field(default_factory=lambda: (0, set()))  # (epoch, windows of shards trained on so far in it): what a stop mid-epoch saves

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
