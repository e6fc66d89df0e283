"""A train split that is streamed (a sharded corpus), as the loop sees it: ``StreamingSplit`` and its epoch batches.

The loop takes an in-memory split (``SplitTensors``, ``MultiSizeSplit``) or a ``StreamingSplit``; both answer
``epoch_batches`` and ``steps_per_epoch``, so ``train_one_epoch`` has one loop over batches. What streams the
shards (``dlfm.data.shard_stream.ShardStream``: a DataLoader over shards, a seeded per-epoch shard order, a
shuffle buffer of a few shards, each rank its own shards) lives with the data: here is only what the loop asks
of it. The stream reports each window of shards whose last batch has been trained on, so a stop mid-epoch
saves the windows done and a resume skips them (resume at shard granularity).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator, Protocol

import torch

from dlfm.training.batches import group_batches


class BatchStream(Protocol):
    """What a streamed split provides (``dlfm.data.shard_stream.ShardStream``)."""

    def steps(self, epoch: int, batch_size: int, world_size: int, skip: set[int], seed: int) -> int:
        """Optimiser steps every rank takes in ``epoch`` (the same on every rank, so DDP never waits)."""

    def batches(self, epoch: int, batch_size: int, rank: int, world_size: int, skip: set[int], seed: int,
                pin: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, bool]]:
        """(images, labels, window, last batch of that window) of this rank's shards in ``epoch``, windows in ``skip`` left out."""


@dataclass
class StreamingSplit:
    """A train split read shard by shard. ``sample`` (a few thousand of its images, held) stands in for it where the
    loop needs pixels before training: the mean image, MAE's position means and the image size."""

    stream: BatchStream
    sample: object  # SplitTensors of the first shards' images
    num_images: int  # images in the split (every rank together)

    @property
    def groups(self) -> tuple:
        return (self.sample,)

    def placed(self, place: Callable[[torch.Tensor], torch.Tensor]) -> "StreamingSplit":
        """The same stream; the sample placed (streamed batches are moved as they come)."""
        return replace(self, sample=self.sample.placed(place))


def steps_per_epoch(data, batch_size: int, rank: int, world_size: int) -> int:
    """Optimiser steps of one epoch (the first, for a stream: its shards may differ a little from epoch to epoch)."""
    if isinstance(data, StreamingSplit):
        return data.stream.steps(1, batch_size, world_size, set(), 0)
    return len(group_batches(data, batch_size, None, rank, world_size))


def epoch_batches(ctx, data, epoch: int) -> tuple[int, Iterator[tuple[int, torch.Tensor, torch.Tensor, int | None]]]:
    """(steps, batches) of one epoch: each batch (images in it, images, labels on the device, window finished or None)."""
    runtime = ctx.runtime
    if not isinstance(data, StreamingSplit):
        order = group_batches(data, ctx.config.batch_size, ctx.generator, runtime.rank, runtime.world_size)
        return len(order), ((len(index), images, labels, None) for _, index, images, labels in ctx.grouped_batches(data, order))
    skip = set(ctx.stream_skip.pop(epoch, ()))
    ctx.stream_done = (epoch, set(skip))
    steps = data.stream.steps(epoch, ctx.config.batch_size, runtime.world_size, skip, ctx.config.seed)
    def passes():
        """This rank's batches, then (a rank with fewer images than another) its shards again, to fill the steps."""
        left = skip
        while True:
            empty = True
            for item in data.stream.batches(epoch, ctx.config.batch_size, runtime.rank, runtime.world_size, left,
                                            ctx.config.seed, runtime.device.type == "cuda"):
                empty = False
                yield item
            if empty and not left:
                return
            left = set()

    def batches():
        # zip asks range first: after the last step no further batch is read. Every rank stops at the same step,
        # so DDP's all-reduces stay matched.
        for _, (images, labels, window, last) in zip(range(steps), passes()):
            yield (len(labels), images.to(runtime.device, non_blocking=True), labels.to(runtime.device, non_blocking=True),
                   window if last else None)

    return steps, batches()
