"""Streaming a sharded corpus's train split through a torch DataLoader (the loop's ``BatchStream``).

Per epoch: the train shards in a seeded order (``seed``, ``epoch``); each torchrun rank takes every
``world_size``-th shard of that order, so ranks read disjoint shards that together cover the epoch (every rank
takes as many steps as the rank with the most images: one with fewer reads its own shards again from the start to
fill them, where ``DistributedSampler`` would pad with another rank's images); a rank's shards are
read in windows of ``BUFFER_SHARDS`` shards, and the images of a window are shuffled together (the shuffle
buffer: memory is bounded by a few shards, whatever the corpus size); DataLoader workers take every
``num_workers``-th window. A window is the unit of resume: a stop saves the windows trained on, a resume skips them.

Val and test of a sharded corpus are read whole (``sharded_split``): they are small, and evaluated every epoch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dlfm.data.shards import ShardedDataset

BUFFER_SHARDS = 2  # shards shuffled together: the shuffle buffer, and at most this many shards decoded per reader
SAMPLE_IMAGES = 2048  # train images held for the loop's baselines (mean image, position means)
LOADER_WORKERS = 0  # DataLoader processes reading shards; 0 reads in the training process (measured: benchmarks/shards.py)


class ShardStream(torch.utils.data.IterableDataset):
    """One split's shards as (images, labels, window, last) batches for one (epoch, rank) at a time."""

    def __init__(self, dataset: ShardedDataset, split: str = "train", buffer_shards: int = BUFFER_SHARDS,
                 workers: int = LOADER_WORKERS):
        super().__init__()
        self.dataset, self.split, self.buffer_shards, self.workers = dataset, split, buffer_shards, workers
        self.entries = dataset.shards(split)
        self.job: dict = {}  # the (epoch, batch, rank, world, skip, seed) being read; set by ``batches``

    def windows(self, epoch: int, rank: int, world_size: int, seed: int = 0) -> list[list[dict]]:
        """This rank's windows of shards in ``epoch``: a seeded shard order, every world_size-th shard, in windows."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self.entries))[rank::world_size]
        mine = [self.entries[k] for k in order]
        return [mine[start:start + self.buffer_shards] for start in range(0, len(mine), self.buffer_shards)]

    def steps(self, epoch: int, batch_size: int, world_size: int, skip: set[int], seed: int = 0) -> int:
        """Steps every rank takes: the most any rank's windows give (a window's last batch may be short)."""
        return max(sum(math.ceil(sum(e["num_images"] for e in window) / batch_size)
                       for w, window in enumerate(self.windows(epoch, rank, world_size, seed)) if w not in skip)
                   for rank in range(world_size))

    def batches(self, epoch: int, batch_size: int, rank: int, world_size: int, skip: set[int], seed: int, pin: bool):
        """The DataLoader over this rank's windows of ``epoch`` (each yield one batch: the dataset batches itself)."""
        self.job = {"epoch": epoch, "batch": batch_size, "rank": rank, "world": world_size, "skip": set(skip), "seed": seed}
        return torch.utils.data.DataLoader(self, batch_size=None, num_workers=self.workers, pin_memory=pin,
                                           persistent_workers=False)

    def __iter__(self):
        job = self.job
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        windows = self.windows(job["epoch"], job["rank"], job["world"], job["seed"])
        for w, window in enumerate(windows):
            if w in job["skip"] or w % workers != worker:
                continue
            parts = [self.dataset.read_shard(entry) for entry in window]
            images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
            labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
            del parts
            order = torch.from_numpy(np.random.default_rng([job["seed"], job["epoch"], job["rank"], w]).permutation(len(labels)))
            images, labels = torch.from_numpy(images), torch.from_numpy(labels)
            chunks = order.split(job["batch"])
            for k, index in enumerate(chunks):
                yield images[index], labels[index], w, k == len(chunks) - 1


def sharded_split(dataset: ShardedDataset, split: str):
    """A sharded corpus's split for the loop: train streamed (a ``StreamingSplit``), val and test in memory."""
    from dlfm.training.context import SplitTensors
    from dlfm.training.streaming import StreamingSplit

    if split != "train":
        images, labels = dataset.load_split(split)
        return SplitTensors(torch.from_numpy(images), torch.from_numpy(labels))
    sample_images, sample_labels, held = [], [], 0
    for entry in dataset.shards(split):
        if held >= SAMPLE_IMAGES:
            break
        images, labels = dataset.read_shard(entry)
        sample_images.append(images[: SAMPLE_IMAGES - held])
        sample_labels.append(labels[: SAMPLE_IMAGES - held])
        held += len(sample_images[-1])
    sample = SplitTensors(torch.from_numpy(np.concatenate(sample_images)), torch.from_numpy(np.concatenate(sample_labels)))
    return StreamingSplit(ShardStream(dataset, split), sample, len(dataset.indices(split)))
