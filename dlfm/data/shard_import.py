"""``dlfm dataset import SRC --out DIR --shard-images K``: the user's images streamed into a sharded corpus
(format: ``dlfm.data.shards``) a block of K images at a time, so the corpus is never held in memory.

The sources: a ``.npy`` stack (read a block at a time after its header is checked against its size), an ``.npz`` (its
``images`` member read block by block from the archive, ``labels`` and ``split`` members whole) or a folder of
per-image ``.npy`` files (flat, or class subfolders whose sorted names are the classes). Without a split, each
image goes to train, val or test by a seeded draw (``--seed``, ``--val-fraction``, ``--test-fraction``).
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from dlfm.data import layout
from dlfm.data.importer import FORCE_OPTION, TARGET_OPTION, _check_target, _software_versions
from dlfm.data.safe_npy import check_npy_header, read_npy_header
from dlfm.data.shards import ShardWriter, load_sharded_dir
from dlfm.data.user_arrays import UserArrays
from dlfm.data.user_files import _class_folder_files, _npy_errors, parse_npy, read_image_file, read_npy_file
from dlfm.errors import DatasetError

Block = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]  # (images n×1×H×H float32, labels or None, split or None)


def _as_stack(images: np.ndarray, name: str) -> np.ndarray:
    """A block as float32 N×1×H×H, refused in one line when it is not an image stack or holds NaN/inf."""
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3] or images.dtype.kind not in "fiu":
        raise DatasetError(f"{name} holds {images.dtype} of shape {images.shape}; a corpus is a numeric N×H×H or N×1×H×H stack")
    images = np.asarray(images, dtype=np.float32)
    if not np.isfinite(images).all():
        raise DatasetError(f"{name} contains NaN or infinite pixels; remove or replace those images")
    return images


def _npy_blocks(path: Path, block: int, labels: np.ndarray | None) -> Iterator[Block]:
    with _npy_errors(str(path)):
        with open(path, "rb") as handle:
            header = read_npy_header(handle)
        check_npy_header(header, path.stat().st_size)
    if header.dtype.hasobject or header.fortran_order:
        raise DatasetError(f"{path} is an object or Fortran-ordered array; save a plain C-ordered numeric stack with numpy.save")
    # Read block by block rather than through np.load's memory map: mapped pages count in the process's RSS and
    # stay there until unmapped, so a mapped 1.6 GB stack would look like 1.6 GB held.
    count, row = header.shape[0], int(np.prod(header.shape[1:])) * header.dtype.itemsize
    with open(path, "rb") as handle:
        handle.seek(header.data_offset)
        for start in range(0, count, block):
            n = min(block, count - start)
            data = np.frombuffer(handle.read(n * row), dtype=header.dtype).reshape(n, *header.shape[1:])
            yield (_as_stack(data, str(path)), None if labels is None else labels[start:start + n], None)


def _npz_blocks(path: Path, block: int, labels: np.ndarray | None) -> Iterator[Block]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{path} is not a readable .npz ({error}); save it with numpy.savez") from None
    with archive:
        members = {name.removesuffix(".npy"): name for name in archive.namelist()}
        key = "images" if "images" in members else (next(iter(members)) if len(members) == 1 else None)
        if key is None:
            raise DatasetError(f"{path} holds {sorted(members)} but no `images` member; save it with numpy.savez(path, images=...)")
        extra = {name: parse_npy(archive.read(members[name]), f"{path}:{name}") for name in ("labels", "split") if name in members}
        labels = extra.get("labels", labels)
        split = extra.get("split")
        with archive.open(members[key]) as stream, _npy_errors(f"{path}:{key}"):
            header = read_npy_header(stream)
            check_npy_header(header, archive.getinfo(members[key]).file_size)  # the member's uncompressed .npy bytes
            if header.dtype.hasobject or header.fortran_order:
                raise DatasetError(f"{path}:{key} is an object or Fortran-ordered array; save a plain numeric stack")
            count, row = header.shape[0], int(np.prod(header.shape[1:])) * header.dtype.itemsize
            for start in range(0, count, block):
                n = min(block, count - start)
                data = np.frombuffer(stream.read(n * row), dtype=header.dtype).reshape(n, *header.shape[1:])
                yield (_as_stack(data, f"{path}:{key}"), None if labels is None else labels[start:start + n],
                       None if split is None else split[start:start + n])


def _folder_blocks(root: Path, block: int) -> tuple[tuple[str, ...], Iterator[Block]]:
    if any((root / name).is_dir() for name in layout.SPLITS):
        raise DatasetError(f"{root} has split folders; --shard-images reads a flat folder or class folders, so drop "
                           "train/ val/ test/ (the split is drawn) or import without --shard-images")
    records = _class_folder_files(root)
    if not records:
        raise DatasetError(f"{root} holds no .npy images; pass a folder of .npy files, a .npy stack or an .npz")
    class_names = tuple(sorted({name for name, _ in records if name is not None}))

    def blocks() -> Iterator[Block]:
        for start in range(0, len(records), block):
            chunk = records[start:start + block]
            images = [read_image_file(file, allow_object=False)[0] for _, file in chunk]
            if len({image.shape for image in images}) > 1:
                raise DatasetError(f"{root} holds images of several sizes; give every image the same size")
            labels = np.array([class_names.index(name) for name, _ in chunk]) if class_names else None
            yield _as_stack(np.stack(images), str(root)), labels, None

    return class_names, blocks()


def _draw_split(rng: np.random.Generator, n: int, spec: UserArrays) -> np.ndarray:
    draws = rng.random(n)
    return np.where(draws < spec.test_fraction, "test", np.where(draws < spec.test_fraction + spec.val_fraction, "val", "train"))


def import_sharded(spec: UserArrays, out, shard_images: int, force: bool = False) -> Path:
    """Stream ``spec.images`` into the sharded corpus ``out`` (``shard_images`` images per shard); return its path."""
    if not isinstance(shard_images, int) or shard_images < 1:
        raise DatasetError(f"--shard-images must be a positive integer, got {shard_images!r}")
    if spec.params:
        raise DatasetError("--params is not read with --shard-images (a sharded corpus holds images and labels); drop it")
    source, target = Path(spec.images), Path(out)
    if not source.exists():
        raise DatasetError(f"images {source} does not exist; pass a .npy stack, an .npz or a folder of .npy files")
    _check_target(target, force)
    labels = None
    if spec.labels:
        labels = read_npy_file(Path(spec.labels))
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise DatasetError(f"{spec.labels} must hold one integer label per image for --shard-images")
    class_names = spec.class_names
    if source.is_dir():
        folder_classes, blocks = _folder_blocks(source, shard_images)
        class_names = class_names or folder_classes
    elif source.suffix == ".npy":
        blocks = _npy_blocks(source, shard_images, labels)
    elif source.suffix == ".npz":
        blocks = _npz_blocks(source, shard_images, labels)
    else:
        raise DatasetError(f"images {source} has an unknown file type {source.suffix or 'without suffix'!r}; "
                           "pass a .npy stack, an .npz or a folder of .npy files")
    rng = np.random.default_rng(spec.seed)
    seen_labels: set[int] = set()
    labelled = [bool(class_names) or labels is not None]  # an .npz's own labels member also labels the corpus

    def fill(scratch: Path) -> None:
        writer = ShardWriter(scratch, shard_images)
        for images, block_labels, split in blocks:
            if block_labels is not None and len(block_labels) != len(images):
                raise DatasetError(f"{spec.labels or source} has fewer labels than images; give one label per image")
            labelled[0] = labelled[0] or block_labels is not None
            block_labels = np.zeros(len(images), np.int64) if block_labels is None else np.asarray(block_labels, np.int64)
            seen_labels.update(np.unique(block_labels).tolist())
            split = _draw_split(rng, len(images), spec) if split is None else np.asarray(split).astype(str)
            for name in layout.SPLITS:
                chosen = split == name
                if chosen.any():
                    writer.add(images[chosen], block_labels[chosen], name)
        names = class_names or (tuple(f"class_{k}" for k in range(max(seen_labels) + 1)) if labelled[0] else ("unlabelled",))
        if max(seen_labels) >= len(names) or min(seen_labels) < 0:
            raise DatasetError(f"labels run outside 0..{len(names) - 1}; pass --class-names naming every class")
        writer.finish({"name": target.name, "task": "classification" if labelled[0] else "unlabelled",
                       "class_names": list(names), "imported_from": str(source.resolve()),
                       "import_settings": {**dataclasses.asdict(spec), "shard_images": shard_images},
                       "software": _software_versions()})

    layout.write_atomically(target, fill, FORCE_OPTION, TARGET_OPTION)
    load_sharded_dir(target)
    return target
