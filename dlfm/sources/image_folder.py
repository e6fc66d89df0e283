"""The image-folder source: a flat folder of ``.npy`` images, an unlabelled corpus for the self-supervised objectives
(one placeholder class; a seeded split)."""

from __future__ import annotations

from pathlib import Path

from dlfm.data.deeplense import is_deeplense_folder
from dlfm.data.user_arrays import load_image_folder
from dlfm.data.user_files import is_image_folder
from dlfm.sources.base import Request, directory, manifest_of


def claims(spec: str) -> bool:
    """A directory, neither a dlfm dataset nor DeepLense folders, with .npy images directly in it."""
    path = directory(spec)
    return path is not None and manifest_of(path) is None and not is_deeplense_folder(path) and is_image_folder(path)


def load(spec: str, request: Request):
    """The images as an unlabelled LensDataset, read through the safe .npy reader, nothing written."""
    dataset = load_image_folder(Path(spec))
    dataset.normalize = request.normalize
    return dataset
