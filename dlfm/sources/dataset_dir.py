"""The dataset-directory source: a dlfm dataset directory of one image size (``manifest.json`` beside ``images.npy``),
simulated or imported, read after its sha256 digests are checked."""

from __future__ import annotations

from pathlib import Path

from dlfm.data.dataset import load_dataset_dir
from dlfm.data.shards import is_sharded_manifest
from dlfm.sources.base import Request, directory, manifest_of


def claims(spec: str) -> bool:
    """A directory with a manifest.json that names no image sets and is not a sharded corpus's (an unreadable one
    too: loading says what is wrong)."""
    path = directory(spec)
    manifest = manifest_of(path) if path is not None else None
    return manifest is not None and not manifest.get("image_sets") and not is_sharded_manifest(manifest)


def load(spec: str, request: Request):
    """The verified directory as a LensDataset."""
    return load_dataset_dir(Path(spec), normalize=request.normalize, verify=request.verify)
