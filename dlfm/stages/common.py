"""Helpers shared by stages: dataset resolution and tensors for the training loop."""

from __future__ import annotations

from pathlib import Path

import torch

from dlfm.errors import DatasetError

DATA_DIR = "data"  # where presets are simulated and cached


def resolve_dataset(spec: str, n_train: int = 3000, n_val: int = 600, n_test: int = 600, seed: int = 0, workers: int | None = None):
    """A preset name (simulated and cached if missing), an s3:// dataset dir, a dataset dir or a DeepLense folder → LensDataset."""
    from dlfm.data import load_dataset
    from dlfm.simulation import PRESETS, SimulationConfig, simulate_dataset

    if spec.startswith("s3://"):
        from dlfm.data.remote import fetch_s3_dataset

        dataset = load_dataset(fetch_s3_dataset(spec, cache_dir=f"{DATA_DIR}/s3-cache"))
        dataset.manifest["source_uri"] = spec  # the run input then names the S3 URI, not the cache dir
        return dataset
    if spec in PRESETS:
        config = SimulationConfig(preset=spec, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
        config.validate()
        return load_dataset(simulate_dataset(config, out_dir=DATA_DIR, workers=workers))
    path = Path(spec)
    if not path.exists():
        raise DatasetError(
            f"dataset {spec!r} is neither a preset ({', '.join(PRESETS)}) nor an existing path; "
            "pass a preset name or a dataset directory"
        )
    return load_dataset(path)


def split_tensors(dataset, split: str):
    """Normalised images and labels of one split as tensors for the loop."""
    from dlfm.training.loop import SplitTensors

    images = torch.from_numpy(dataset.get_images(split).astype("float32", copy=False))
    labels = torch.from_numpy(dataset.get_labels(split).astype("int64", copy=False))
    return SplitTensors(images, labels)
