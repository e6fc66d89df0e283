"""The multi-instrument directory source: a dlfm dataset directory whose manifest lists ``image_sets`` (one images
file per image size), read as one LensDataset per instrument."""

from __future__ import annotations

from pathlib import Path

from dlfm.data.multi import load_multi_dataset_dir
from dlfm.sources.base import Request, directory, manifest_of


def claims(spec: str) -> bool:
    """A directory whose manifest.json lists image sets."""
    path = directory(spec)
    manifest = manifest_of(path) if path is not None else None
    return bool(manifest and manifest.get("image_sets"))


def load(spec: str, request: Request):
    """The verified directory as a MultiInstrumentDataset."""
    return load_multi_dataset_dir(Path(spec), normalize=request.normalize, verify=request.verify)
