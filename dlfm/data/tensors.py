"""From a dataset split to the tensors the training loop takes (one group per image size of a multi-instrument set)."""

from __future__ import annotations

from dlfm.data.dataset import LensDataset
from dlfm.data.multi import MultiInstrumentDataset
from dlfm.data.shards import ShardedDataset


def split_tensors(dataset: LensDataset | MultiInstrumentDataset | ShardedDataset, split: str):
    """Normalised images and labels of one split as tensors for the loop (one group per image size of a multi-instrument
    set; a sharded corpus's train split streamed)."""
    import torch

    if isinstance(dataset, ShardedDataset):
        from dlfm.data.shard_stream import sharded_split

        return sharded_split(dataset, split)

    from dlfm.training.context import MultiSizeSplit, SplitTensors

    if isinstance(dataset, MultiInstrumentDataset):  # the loop batches each image size apart
        return MultiSizeSplit(tuple(split_tensors(part, split) for part in dataset.parts.values()), tuple(dataset.parts))

    images = torch.from_numpy(dataset.get_images(split).astype("float32", copy=False))
    labels = torch.from_numpy(dataset.get_labels(split).astype("int64", copy=False))
    return SplitTensors(images, labels)
