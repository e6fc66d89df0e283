"""Where the split tensors live while a model trains on them, and the batches read from there.

Three placements, one row each in ``FEEDERS``:

- ``device``: every split fits in a set fraction of the free accelerator memory, so it is copied there
  once; batches are indexed (and augmented) on the device, and no step copies pixels from the host;
- ``pinned``: the splits stay on the host in page-locked memory; each batch is gathered into a pinned
  staging buffer and copied with ``non_blocking=True`` one batch ahead of the step that needs it;
- ``host``: the CPU path, where the tensors already are where the model is: nothing moves.

The choice is a pure function of sizes (``choose_placement``), so it is tested on the CPU with synthetic
free-memory numbers; ``fit`` returns it and the stage tags the run with it (``dlfm.data_placement``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

PLACEMENTS = ("device", "pinned", "host")
# Share of the accelerator's free memory (torch.cuda.mem_get_info) that the splits may take when placed there:
# the rest is left to activations, optimiser state and the allocator's cache (ResNet18 at batch 1024 and 64 px
# needs a few GB). A 15000 x 64 x 64 float32 split is 245 MB, so GPU-size runs fit many times over.
DEVICE_MEMORY_FRACTION = 0.5


def split_bytes(splits) -> int:
    """Bytes of the images and labels of every distinct split in ``splits`` (SplitTensors or MultiSizeSplit: each group's)."""
    seen, total = set(), 0
    for group in (group for split in splits for group in split.groups):
        for tensor in (group.images, group.labels):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def choose_placement(nbytes: int, device_type: str, free_bytes: int | None,
                     fraction: float = DEVICE_MEMORY_FRACTION) -> str:
    """``device`` when ``nbytes`` fit in ``fraction`` of ``free_bytes`` of a CUDA device, else ``pinned``; ``host`` off CUDA.

    MPS shares memory with the host and has no pinned copies: its tensors take the host path (batches copied
    as they are needed), as on the CPU where there is nothing to copy.
    """
    if device_type != "cuda":
        return "host"
    return "device" if free_bytes is not None and nbytes <= fraction * free_bytes else "pinned"


def free_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (None elsewhere)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def place_tensor(tensor: torch.Tensor, device: torch.device, placement: str) -> torch.Tensor:
    """``tensor`` where ``placement`` keeps it: on the device, in pinned host memory, or as it is."""
    if placement == "device":
        return tensor.to(device)
    if placement == "pinned":
        return tensor if tensor.is_pinned() else tensor.pin_memory()
    return tensor


@dataclass
class HostFeeder:
    """Batches indexed on the host and copied as they are needed (nothing to copy on the CPU)."""

    images: torch.Tensor
    labels: torch.Tensor
    device: torch.device

    def batches(self, order: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(index, images, labels) per batch of host indices ``order``; images and labels on ``device``."""
        for index in order:
            yield index, self.images[index].to(self.device), self.labels[index].to(self.device)


class DeviceFeeder(HostFeeder):
    """The split already lives on the device: the epoch's indices go there once and each batch is a gather there."""

    def batches(self, order):
        if not order:
            return
        sizes = [len(index) for index in order]
        on_device = torch.cat(order).to(self.device, non_blocking=True).split(sizes)
        for index, device_index in zip(order, on_device):
            yield index, self.images.index_select(0, device_index), self.labels.index_select(0, device_index)


class PinnedFeeder(HostFeeder):
    """Gather each batch into one of two pinned staging buffers and copy it asynchronously, one batch ahead."""

    SLOTS = 2  # the buffer being copied and the one being filled

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, device: torch.device):
        super().__init__(images, labels, device)
        self.staging: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (slot, batch size) → pinned (images, labels)
        self.copied: list[torch.cuda.Event | None] = [None] * self.SLOTS

    def _buffers(self, slot: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (slot, size)
        if key not in self.staging:
            self.staging[key] = (torch.empty((size, *self.images.shape[1:]), dtype=self.images.dtype).pin_memory(),
                                 torch.empty((size, *self.labels.shape[1:]), dtype=self.labels.dtype).pin_memory())
        return self.staging[key]

    def _load(self, index: torch.Tensor, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()  # the copy out of this buffer, two batches ago, has finished
        images, labels = self._buffers(slot, len(index))
        torch.index_select(self.images, 0, index, out=images)
        torch.index_select(self.labels, 0, index, out=labels)
        out = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.copied[slot] = event
        return out

    def batches(self, order):
        if not order:
            return
        ahead = self._load(order[0], 0)
        for step, index in enumerate(order):
            current = ahead
            if step + 1 < len(order):
                ahead = self._load(order[step + 1], (step + 1) % self.SLOTS)
            yield (index, *current)


FEEDERS = {"device": DeviceFeeder, "pinned": PinnedFeeder, "host": HostFeeder}
