"""``dlfm dataset import``: the user's arrays written as a verified dataset directory (format: ``dlfm.data.layout``).

Everything is read and checked before anything is written; the directory is built beside the
target and renamed into place, through the same writer as the simulator. An existing target is
replaced only with ``force`` and only when it holds nothing but dlfm's own dataset files.
"""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

import numpy as np

import dlfm
from dlfm.data import layout
from dlfm.data.user_arrays import UserArrays, read_user_arrays
from dlfm.errors import DatasetError

__all__ = ["import_dataset"]

FORCE_OPTION = "--force"  # the CLI's words, for the refusals
TARGET_OPTION = "--out"


def _software_versions() -> dict:
    import pandas as pd

    return {"python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__, "dlfm": dlfm.__version__}


def _check_target(target: Path, force: bool) -> None:
    """Refuse a target that holds files dlfm did not write, and, without ``force``, any dataset already there."""
    if not target.exists() and not target.is_symlink():
        return
    layout.check_dataset_owned(target, FORCE_OPTION, TARGET_OPTION)
    if not force and any(target.iterdir()):
        raise DatasetError(f"{target} already holds a dataset; pass {FORCE_OPTION} to replace it, or another {TARGET_OPTION}")


def followed_symlinks(spec: UserArrays) -> list[str]:
    """``link -> where it led`` for each path the import read through a symbolic link (summary and manifest)."""
    import os

    tops = [Path(v) for v in (spec.images, spec.labels, spec.params) if v]
    inside = sorted(Path(spec.images).rglob("*")) if spec.images and Path(spec.images).is_dir() else []
    return [f"{path} -> {os.path.realpath(path)}" for path in tops + inside
            if path.is_symlink() or (path in tops and os.path.abspath(path) != os.path.realpath(path))]


def import_dataset(spec: UserArrays, out, force: bool = False) -> Path:
    """Read ``spec`` (the user's images, labels, parameters, split) and write it as the dataset directory ``out``."""
    target = Path(out)
    _check_target(target, force)  # before reading gigabytes
    dataset = read_user_arrays(spec)
    split_names = dataset.split
    class_counts = {split: {name: int(((split_names == split) & (dataset.labels == k)).sum())
                            for k, name in enumerate(dataset.class_names)} for split in layout.SPLITS}
    manifest = {
        **{k: v for k, v in dataset.manifest.items() if k not in ("format", "digest", "source_path")},
        "name": target.name,
        "class_counts": class_counts,
        "param_units": {},  # the user's columns: units are the user's
        "imported_from": {**{k: str(Path(v).resolve()) for k, v in dataclasses.asdict(spec).items()
                             if k in ("images", "labels", "params") and v},
                          "content_digest": dataset.manifest["digest"]},
        "import_settings": dataclasses.asdict(spec),
        **({"pixel_scale_arcsec": spec.pixel_scale} if spec.pixel_scale else {}),  # dlfm.data.resample reads it
        "followed_symlinks": followed_symlinks(spec),
        "software": _software_versions(),
    }

    def fill(scratch: Path) -> None:
        layout.write_images(scratch, dataset.images)
        layout.finish_dataset(scratch, dataset.labels, dataset.params, manifest)

    layout.write_atomically(target, fill, FORCE_OPTION, TARGET_OPTION)
    layout.verify_dataset_dir(target)
    return target
