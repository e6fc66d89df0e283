"""From a dataset split to the tensors the training loop takes (one group per image size of a multi-instrument set)."""

from __future__ import annotations

from dlfm.data.dataset import LensDataset
from dlfm.data.multi import MultiInstrumentDataset


def split_tensors(dataset: LensDataset | MultiInstrumentDataset, split: str):
    """Normalised images and labels of one split as tensors for the loop (one group per image size of a multi-instrument set)."""
    import torch

    from dlfm.training.context import MultiSizeSplit, SplitTensors

    if isinstance(dataset, MultiInstrumentDataset):  # the loop batches each image size apart
        return MultiSizeSplit(tuple(split_tensors(part, split) for part in dataset.parts.values()), tuple(dataset.parts))

    images = torch.from_numpy(dataset.get_images(split).astype("float32", copy=False))
    labels = torch.from_numpy(dataset.get_labels(split).astype("int64", copy=False))
    return SplitTensors(images, labels)
