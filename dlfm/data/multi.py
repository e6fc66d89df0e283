"""A dataset of several image sizes (a multi-instrument corpus): its view and reading its directory.

The directory format (``images_<set>.npy`` per image set, ``image_sets`` in the manifest) is owned by
``dlfm.data.layout``; simulating and assembling one is ``dlfm.simulation.multi``; which spec is such a
directory is the ``multi_dir`` row of ``dlfm.sources``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import dlfm.data.layout as layout
from dlfm.data.dataset import LensDataset, _load_npy
from dlfm.errors import DatasetError

INSTRUMENT_COLUMN = "instrument"  # params.csv: the image set (instrument) of each row


@dataclass
class MultiInstrumentDataset:
    """Images of several sizes: one ``LensDataset`` per instrument, rows in instrument blocks, one digest over all."""

    parts: dict[str, LensDataset]  # instrument → its rows (images of one size, labels, params, splits), in manifest order
    class_names: tuple[str, ...]
    task: str
    manifest: dict
    root: Path | None
    _index_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def digest(self) -> str:
        """The dataset digest (sha256 over its files)."""
        return self.manifest["digest"]

    @property
    def image_sizes(self) -> tuple[int, ...]:
        """Pixels per image axis of each instrument, in manifest order."""
        return tuple(part.image_size for part in self.parts.values())

    @property
    def image_size(self) -> int:
        """The largest image size: what an encoder trained on it has seen at most (``image_sizes`` has them all)."""
        return max(self.image_sizes)

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([part.labels for part in self.parts.values()])

    @property
    def params(self) -> pd.DataFrame:
        return pd.concat([part.params for part in self.parts.values()], ignore_index=True)

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts.values())

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split over all instruments, in dataset order."""
        if split not in self._index_cache:
            offsets = np.cumsum([0, *(len(part) for part in self.parts.values())])
            self._index_cache[split] = np.concatenate([part.indices(split) + offset
                                                       for part, offset in zip(self.parts.values(), offsets)])
        return self._index_cache[split]

    def get_images(self, split: str) -> np.ndarray:
        """One array cannot hold images of several sizes: DatasetError naming the parts to read instead."""
        raise DatasetError(f"dataset {self.root} holds images of sizes {self.image_sizes} ({', '.join(self.parts)}); "
                           "this step needs one image size, so pass one instrument's preset or dataset instead")

    def get_labels(self, split: str) -> np.ndarray:
        """int64 class indices of a split, instrument by instrument."""
        return np.concatenate([part.get_labels(split) for part in self.parts.values()])

    def get_params(self, split: str) -> pd.DataFrame:
        """Physical parameters of a split (with the instrument column), instrument by instrument."""
        return pd.concat([part.get_params(split) for part in self.parts.values()], ignore_index=True)


def load_multi_dataset_dir(path: Path, normalize: bool = True, verify: bool = True) -> MultiInstrumentDataset:
    """A multi-instrument dataset directory as one LensDataset per instrument, verified by sha256 first unless ``verify`` is false."""
    path = Path(path)
    manifest = layout.verify_dataset_dir(path) if verify else layout.read_manifest(path)
    if not manifest.get("image_sets"):
        raise DatasetError(f"dataset {path} has no image_sets in its manifest; load it with dlfm.data.dataset.load_dataset_dir")
    layout.check_image_sets(path, manifest)
    labels = _load_npy(path / layout.LABELS_FILE)
    try:
        params = pd.read_csv(path / layout.PARAMS_FILE, converters={"class_name": str, INSTRUMENT_COLUMN: str})
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DatasetError(f"{path / layout.PARAMS_FILE} is unreadable ({error}); {layout.REBUILD_HINT}") from None
    class_names = tuple(manifest.get("class_names", ()))
    sets = manifest["image_sets"]
    if len(labels) != len(params) or len(labels) != sum(int(entry["num_images"]) for entry in sets):
        raise DatasetError(f"dataset {path} is inconsistent ({len(labels)} labels, {len(params)} params rows, image sets "
                           f"of {sum(int(e['num_images']) for e in sets)} images); {layout.REBUILD_HINT}")
    if not class_names or (len(labels) and (labels.min() < 0 or labels.max() >= len(class_names))):
        raise DatasetError(f"dataset {path} has labels outside its class_names; {layout.REBUILD_HINT}")
    parts, start = {}, 0
    for entry in sets:
        name, count, size = str(entry["name"]), int(entry["num_images"]), int(entry["image_size"])
        images = _load_npy(path / entry["file"], mmap_mode="r")
        rows = params.iloc[start:start + count].reset_index(drop=True)
        if images.shape != (count, 1, size, size) or images.dtype != np.float32:
            raise DatasetError(f"{path / entry['file']} has shape {images.shape} ({images.dtype}), expected "
                               f"({count}, 1, {size}, {size}) float32; {layout.REBUILD_HINT}")
        if (rows[INSTRUMENT_COLUMN] != name).any():
            raise DatasetError(f"{path / layout.PARAMS_FILE} rows {start}-{start + count - 1} are not all {name}; "
                               f"{layout.REBUILD_HINT}")
        split = rows["split"].to_numpy(dtype=str)
        if not set(np.unique(split)) <= set(layout.SPLITS):
            raise DatasetError(f"{path / layout.PARAMS_FILE} has unknown split values; {layout.REBUILD_HINT}")
        parts[name] = LensDataset(images=images, labels=labels[start:start + count].astype(np.int64, copy=False), params=rows,
                                  split=split, class_names=class_names, task=manifest.get("task", "classification"),
                                  manifest={**manifest, "image_size": size, "pixel_scale_arcsec": entry.get("pixel_scale_arcsec")}, root=path, normalize=normalize)
        start += count
    return MultiInstrumentDataset(parts, class_names, manifest.get("task", "classification"), manifest, path)
