"""Read the user's own DeepLense files without conversion.

Layouts (class folders of ``.npy`` files shaped (1,H,W) or (H,W)):

- ``root/no/ root/sphere/ root/vort/`` (DeepLense Common Test names), or
- ``root/no_sub/ root/cdm/ root/axion/`` (DeepLenseSim names), or
- either of them inside ``root/train/`` and ``root/val/`` (and optionally ``root/test/``):
  those splits are kept; without ``test/``, half of each class's ``val`` files become ``test``.

Otherwise the split is a deterministic stratified split by ``seed``. Axion files may be object
arrays ``[image, mass]`` (DeepLenseSim ``sim_axion.py``); the mass becomes ``axion_mass`` (eV).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from dlfm.data.dataset import LensDataset
from dlfm.data.layout import SPLITS
from dlfm.data.user_files import read_image_file
from dlfm.errors import ConfigError, DatasetError

__all__ = ["load_deeplense_folder", "is_deeplense_folder", "CLASS_FOLDER_LAYOUTS"]

CLASS_NAMES = ("no_sub", "cdm", "axion")
# folder names of each layout, in CLASS_NAMES order
CLASS_FOLDER_LAYOUTS = {
    "common_test": ("no", "sphere", "vort"),
    "deeplensesim": ("no_sub", "cdm", "axion"),
}


def _layout(path: Path) -> str | None:
    for name, folders in CLASS_FOLDER_LAYOUTS.items():
        if all((path / folder).is_dir() for folder in folders):
            return name
    return None


def is_deeplense_folder(path) -> bool:
    """True if ``path`` holds class folders, directly or under train/ and val/."""
    path = Path(path)
    if _layout(path) is not None:
        return True
    return (path / "train").is_dir() and _layout(path / "train") is not None


def _class_files(root: Path, layout: str) -> list[list[Path]]:
    files = []
    for folder in CLASS_FOLDER_LAYOUTS[layout]:
        found = sorted((root / folder).glob("*.npy"))
        files.append(found)
    return files


def _stratified_split(n: int, rng: np.random.Generator, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Split labels for n files of one class: a seeded permutation, then test, val, train."""
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n_test + n_val >= n and n > 0:  # keep at least one training image per class
        n_val = max(0, min(n_val, n - 1 - n_test))
        n_test = max(0, min(n_test, n - 1))
    order = rng.permutation(n)
    split = np.full(n, "train", dtype="<U5")
    split[order[:n_test]] = "test"
    split[order[n_test : n_test + n_val]] = "val"
    return split


def load_deeplense_folder(path, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> LensDataset:
    """Load DeepLense class folders into a LensDataset with a deterministic stratified split."""
    path = Path(path)
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value}; pass e.g. 0.15")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training images; keep the sum below 1"
        )

    records = []  # (split, label, file)
    if _layout(path) is not None:
        layout = _layout(path)
        split_source = f"stratified seed={seed} val_fraction={val_fraction} test_fraction={test_fraction}"
        for label, files in enumerate(_class_files(path, layout)):
            rng = np.random.default_rng(np.random.SeedSequence([seed, label]))
            for split, file in zip(_stratified_split(len(files), rng, val_fraction, test_fraction), files):
                records.append((str(split), label, file))
    elif (path / "train").is_dir() and _layout(path / "train") is not None:
        layout = _layout(path / "train")
        if not (path / "val").is_dir() or _layout(path / "val") != layout:
            raise DatasetError(
                f"{path} has train/ but no val/ with the same class folders {CLASS_FOLDER_LAYOUTS[layout]}; add val/"
            )
        has_test = (path / "test").is_dir() and _layout(path / "test") == layout
        split_source = "folders train/val/test" if has_test else f"folders train/val; val halved into val/test by seed={seed}"
        for split_dir in SPLITS:
            if split_dir == "test" and not has_test:
                continue
            for label, files in enumerate(_class_files(path / split_dir, layout)):
                if split_dir == "val" and not has_test:
                    rng = np.random.default_rng(np.random.SeedSequence([seed, label]))
                    halves = _stratified_split(len(files), rng, 0.0, 0.5)
                    splits = np.where(halves == "test", "test", "val")
                else:
                    splits = [split_dir] * len(files)
                records.extend((str(s), label, f) for s, f in zip(splits, files))
    else:
        raise DatasetError(
            f"{path} has no class folders (no/ sphere/ vort/ or no_sub/ cdm/ axion/); pass a DeepLense folder"
        )

    for label, folder in enumerate(CLASS_FOLDER_LAYOUTS[layout]):
        if not any(r[1] == label for r in records):
            raise DatasetError(f"{path} has no .npy files for class {folder}; add some or pass another folder")

    order = {s: k for k, s in enumerate(SPLITS)}
    records.sort(key=lambda r: (order[r[0]], r[1], r[2].name))
    axion_label = CLASS_NAMES.index("axion")
    images, masses, lines = None, [], []
    for row, (split, label, file) in enumerate(records):
        image, mass, sha = read_image_file(file, allow_object=label == axion_label)
        if images is None:  # one preallocated block: no list of arrays plus a stacked copy
            images = np.empty((len(records), 1, *image.shape), dtype=np.float32)
        elif image.shape != images.shape[2:]:
            raise DatasetError(f"{file} has shape {image.shape} but other images are {images.shape[2:]}; remove or replace it")
        images[row, 0] = image
        masses.append(mass)
        lines.append(f"{file.relative_to(path).as_posix()} {sha}")
    shape = images.shape[2:]

    labels = np.array([r[1] for r in records], dtype=np.int64)
    split = np.array([r[0] for r in records], dtype="<U5")
    params = pd.DataFrame(
        {
            "split": split,
            "label": labels,
            "class_name": [CLASS_NAMES[k] for k in labels],
            "file": [r[2].relative_to(path).as_posix() for r in records],
            "axion_mass": masses,
        }
    )
    # Digest over file contents and the split settings: another split is another dataset.
    lines.append(f"split {split_source}")
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    manifest = {
        "format": "deeplense-folder",
        "source_path": str(path.resolve()),
        "layout": layout,
        "class_folders": list(CLASS_FOLDER_LAYOUTS[layout]),
        "class_names": list(CLASS_NAMES),
        "task": "classification",
        "image_size": int(shape[0]),
        "num_images": len(records),
        "split_rule": split_source,
        "split_sizes": {s: int((split == s).sum()) for s in SPLITS},
        "seed": seed,
        "param_units": {"axion_mass": "eV (NaN unless given in the file)"},
        "digest": digest,
    }
    return LensDataset(
        images=images,
        labels=labels,
        params=params,
        split=split,
        class_names=CLASS_NAMES,
        task="classification",
        manifest=manifest,
        root=path,
    )
