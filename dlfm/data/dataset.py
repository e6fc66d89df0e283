"""The ``LensDataset`` view (images, labels, parameters, splits) and loading a verified dataset directory.

The directory format itself (file names, manifest, verification) is owned by ``dlfm.data.layout``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dlfm.data.layout import IMAGES_FILE, LABELS_FILE, PARAMS_FILE, REBUILD_HINT, SPLITS, read_manifest, verify_dataset_dir
from dlfm.data.safe_npy import NotNpyError, NpyHeaderError, check_npy_file
from dlfm.errors import DatasetError

__all__ = ["LensDataset", "REGRESSION_TARGETS", "DERIVED_TARGETS", "load_dataset_dir", "normalize_images"]

# Lens-parameter regression targets: columns of ``params`` (units in the manifest's param_units).
REGRESSION_TARGETS = ("theta_E", "src_x", "src_y", "e1", "e2", "gamma1", "gamma2")
# Derived from the targets; the angles phi and psi_ext are periodic with period π.
DERIVED_TARGETS = ("q", "phi", "gamma_ext", "psi_ext")


def normalize_images(images: np.ndarray) -> np.ndarray:
    """Min-max each image to [0, 1] (DeepLense convention); a constant image becomes zeros."""
    images = np.array(images, dtype=np.float32, copy=True)
    flat = images.reshape(len(images), -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    flat -= low
    np.divide(flat, span, out=flat, where=span > 0)
    flat[(span == 0).ravel()] = 0.0
    return images


@dataclass
class LensDataset:
    """Images, labels and physical parameters with a train/val/test split."""

    images: np.ndarray  # (N, 1, H, W) float32 raw flux; a read-only memmap for dataset dirs
    labels: np.ndarray  # (N,) int64 index into class_names
    params: pd.DataFrame  # one row per image: physical parameters, plus split and label columns
    split: np.ndarray  # (N,) "train" | "val" | "test"
    class_names: tuple[str, ...]  # ("no_sub", "cdm", "axion"), ("lens",), the user's names, or ("unlabelled",)
    task: str  # "classification" | "regression" | "unlabelled" (images only: self-supervised objectives)
    manifest: dict
    root: Path | None
    normalize: bool = True  # min-max normalise each image on access
    _index_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def digest(self) -> str:
        """The dataset digest (sha256 over its files)."""
        return self.manifest["digest"]

    @property
    def image_size(self) -> int:
        """Pixels per image axis (images are square)."""
        return int(self.images.shape[-1])

    @property
    def image_sizes(self) -> tuple[int, ...]:
        """Every image size in the dataset: one here (a ``MultiInstrumentDataset`` has several)."""
        return (self.image_size,)

    def __len__(self) -> int:
        return len(self.labels)

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split, in dataset order."""
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
        if split not in self._index_cache:
            self._index_cache[split] = np.flatnonzero(np.asarray(self.split) == split)
        return self._index_cache[split]

    def images_at(self, indices) -> np.ndarray:
        """float32 (n,1,H,W) images at ``indices``, normalised per image if ``self.normalize``."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and np.all(np.diff(indices) == 1):
            batch = self.images[indices[0] : indices[-1] + 1]  # contiguous: one memmap slice
        else:
            batch = self.images[indices]
        if self.normalize:
            return normalize_images(batch)
        return np.array(batch, dtype=np.float32, copy=True)

    def get_images(self, split: str) -> np.ndarray:
        """float32 (n,1,H,W) images of a split, min-max normalised per image if ``self.normalize``."""
        return self.images_at(self.indices(split))

    def get_labels(self, split: str) -> np.ndarray:
        """int64 class indices of a split."""
        return np.asarray(self.labels[self.indices(split)], dtype=np.int64)

    def get_params(self, split: str) -> pd.DataFrame:
        """Physical parameters of a split (fresh 0-based index)."""
        return self.params.iloc[self.indices(split)].reset_index(drop=True)


def _load_npy(path: Path, **kwargs) -> np.ndarray:
    """A plain .npy array, its header checked against the file's size before numpy allocates anything."""
    try:
        check_npy_file(path)
    except NpyHeaderError as error:
        raise DatasetError(f"{path} is refused: {error}; {REBUILD_HINT}") from None
    except NotNpyError as error:
        raise DatasetError(f"{path} is not a .npy file ({error}); {REBUILD_HINT}") from None
    except (ValueError, OSError, EOFError) as error:
        raise DatasetError(f"{path} is truncated or not a valid .npy file ({error}); {REBUILD_HINT}") from None
    try:
        return np.load(path, allow_pickle=False, **kwargs)
    except (ValueError, OSError, EOFError) as error:
        raise DatasetError(
            f"{path} is truncated or not a valid .npy file ({error}); {REBUILD_HINT}"
        ) from None


def check_manifest_semantics(path: Path, manifest: dict, images, labels, params: pd.DataFrame, split) -> None:
    """DatasetError when manifest.json's meaning disagrees with the (sha256-verified) arrays.

    The digest covers the data files, not manifest.json: a hand-edited ``class_names`` (say,
    reversed) would otherwise train fine and mislabel every per-class metric. So each semantic
    field is checked against the arrays: class_names against params.csv's per-row ``class_name``,
    image_size, num_images, split_sizes and class_counts against what is there.
    """
    class_names = list(manifest.get("class_names", ()))
    problems = []
    if "class_name" in params.columns and len(labels):
        recorded = params["class_name"].astype(str).to_numpy()
        implied = np.asarray(class_names, dtype=object)[np.asarray(labels)]
        if (recorded != implied).any():
            row = int(np.flatnonzero(recorded != implied)[0])
            problems.append(f"class_names {class_names} give label {int(labels[row])} of row {row} the name "
                            f"{implied[row]!r}, but params.csv says {recorded[row]!r}")
    if "image_size" in manifest and manifest["image_size"] != images.shape[-1]:
        problems.append(f"image_size {manifest['image_size']} but images are {images.shape[-1]} px")
    if "num_images" in manifest and manifest["num_images"] != len(labels):
        problems.append(f"num_images {manifest['num_images']} but {len(labels)} images")
    names, counts = np.unique(split, return_counts=True)
    actual_sizes = {str(name): int(count) for name, count in zip(names, counts)}
    declared_sizes = {k: v for k, v in manifest.get("split_sizes", actual_sizes).items() if v or k in actual_sizes}
    if declared_sizes != actual_sizes:
        problems.append(f"split_sizes {manifest['split_sizes']} but params.csv has {actual_sizes}")
    if "class_counts" in manifest and class_names and len(labels):
        actual_counts = {name: {} for name in actual_sizes}
        for name in actual_sizes:
            chosen = np.asarray(labels)[np.asarray(split) == name]
            actual_counts[name] = {class_names[k]: int((chosen == k).sum()) for k in range(len(class_names)) if (chosen == k).any()}
        declared_counts = {k: {c: n for c, n in v.items() if n} for k, v in manifest["class_counts"].items() if k in actual_sizes}
        if declared_counts != actual_counts:
            problems.append(f"class_counts {manifest['class_counts']} but the labels give {actual_counts}")
    if problems:
        raise DatasetError(f"dataset {path} manifest.json disagrees with its files: {problems[0]}; "
                           f"{REBUILD_HINT}")


def load_dataset_dir(path: Path, normalize: bool = True, verify: bool = True) -> LensDataset:
    """A dlfm dataset directory of one image size as a LensDataset, verified by sha256 first unless ``verify`` is false."""
    manifest = verify_dataset_dir(path) if verify else read_manifest(path)
    if manifest.get("image_sets"):  # several image sizes: dlfm.data.multi reads those (the multi_dir source)
        raise DatasetError(f"dataset {path} holds several image sets; load it with dlfm.data.multi.load_multi_dataset_dir")
    images = _load_npy(path / IMAGES_FILE, mmap_mode="r")
    labels = _load_npy(path / LABELS_FILE)
    try:
        # Names stay text: a class "01" or a file "007.npy" must not come back as a number.
        params = pd.read_csv(path / PARAMS_FILE, converters={"class_name": str, "file": str})
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DatasetError(f"{path / PARAMS_FILE} is unreadable ({error}); {REBUILD_HINT}") from None

    n = len(labels)
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
        raise DatasetError(f"{path / IMAGES_FILE} has shape {images.shape}, expected (N, 1, H, H); {REBUILD_HINT}")
    if images.dtype != np.float32:
        raise DatasetError(f"{path / IMAGES_FILE} has dtype {images.dtype}, expected float32; {REBUILD_HINT}")
    if labels.ndim != 1 or images.shape[0] != n or len(params) != n:
        raise DatasetError(
            f"dataset {path} is inconsistent ({images.shape[0]} images, {n} labels, {len(params)} params rows); "
            f"{REBUILD_HINT}"
        )
    if "split" not in params.columns:
        raise DatasetError(f"{path / PARAMS_FILE} has no split column; {REBUILD_HINT}")
    split = params["split"].to_numpy(dtype=str)
    bad_split = sorted(set(np.unique(split)) - set(SPLITS))
    if bad_split:
        raise DatasetError(f"{path / PARAMS_FILE} has unknown split values {bad_split}; {REBUILD_HINT}")

    class_names = tuple(manifest.get("class_names", ()))
    if not class_names:
        raise DatasetError(f"dataset {path} manifest has no class_names; {REBUILD_HINT}")
    if n and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DatasetError(
            f"{path / LABELS_FILE} has labels outside 0..{len(class_names) - 1}; {REBUILD_HINT}"
        )
    check_manifest_semantics(path, manifest, images, labels, params, split)
    for start in range(0, n, 4096):  # chunked: never pull a whole memmap into memory
        if np.isnan(images[start : start + 4096]).any():
            raise DatasetError(f"{path / IMAGES_FILE} contains NaN pixels; {REBUILD_HINT}")

    return LensDataset(
        images=images,
        labels=labels.astype(np.int64, copy=False),
        params=params,
        split=split,
        class_names=class_names,
        task=manifest.get("task", "classification"),
        manifest=manifest,
        root=path,
        normalize=normalize,
    )
