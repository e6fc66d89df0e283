"""The DeepLense source: the user's own class folders (``no/ sphere/ vort/`` or ``no_sub/ cdm/ axion/``, optionally
under ``train/`` and ``val/``), read in place without conversion."""

from __future__ import annotations

from pathlib import Path

from dlfm.data.deeplense import is_deeplense_folder, load_deeplense_folder
from dlfm.sources.base import Request, directory, manifest_of


def claims(spec: str) -> bool:
    """A directory, not a dlfm dataset, holding DeepLense class folders."""
    path = directory(spec)
    return path is not None and manifest_of(path) is None and is_deeplense_folder(path)


def load(spec: str, request: Request):
    """The folders as a LensDataset with a deterministic stratified split (or the folders' own train/val/test)."""
    dataset = load_deeplense_folder(Path(spec))
    dataset.normalize = request.normalize
    return dataset
