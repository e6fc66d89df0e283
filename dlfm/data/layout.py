"""The dataset-directory format, owned here: split names, file names, the manifest, digests,
verification, the atomic write and the verified cache.

A dataset directory holds ``images.npy`` (float32, N×1×H×W, raw simulated flux),
``labels.npy`` (int64), ``params.csv`` (one row per image, with ``split`` and ``label``
columns and every physical parameter) and ``manifest.json`` (settings, software versions,
``files: {name: sha256}`` and one ``digest`` over them). Nothing is trusted before it is
verified: a changed byte is a DatasetError that names the file.

A multi-instrument dataset (images of several sizes, e.g. the ``pretrain_multi`` corpus) has one
images file per image set instead of ``images.npy``: ``images_<set>.npy`` (float32, N_k×1×H_k×H_k),
listed in order in the manifest's ``image_sets`` (``name``, ``file``, ``image_size``, ``num_images``).
Its rows are the sets' rows one block after the other, so ``labels.npy`` and ``params.csv`` (with an
``instrument`` column naming each row's set) cover every image once; the sha256s and the one digest
cover every file, as for one images file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from dlfm.errors import DatasetError
from dlfm.outputs import remove_owned_tree

SPLITS = ("train", "val", "test")  # split names, in row order; a row's split index is its position here
IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npy"
PARAMS_FILE = "params.csv"
MANIFEST_FILE = "manifest.json"
DATA_FILES = (IMAGES_FILE, LABELS_FILE, PARAMS_FILE)  # the files the manifest's sha256s cover
IMAGE_SET_FILE = "images_{name}.npy"  # a multi-instrument dataset's images of one set (instrument), in place of images.npy
IMAGE_SET_PATTERN = "images_*.npy"
# A sharded corpus (format owned by dlfm.data.shards) holds Parquet shards named so, beside manifest.json.
SHARD_FILE = "{split}-{index:05d}.parquet"
SHARD_PATTERN = "*-[0-9][0-9][0-9][0-9][0-9].parquet"
FORMAT_NAME = "dlfm-dataset"  # manifest "format"
FORMAT_VERSION = 1  # manifest "format_version"
# The fix for a broken dataset, in the words users type (MLflow params, not script flags).
REBUILD_HINT = "rebuild it with `mlflow run . -e simulate -P force=true` and the params that made it"


def sha256_file(path, chunk_size: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


class RowBlockSha256:
    """sha256 of an ``.npy`` file mapped as ``array`` (rows on axis 0), fed block by block as rows are finished.

    Blocks may finish in any order (a pool's chunks); the hash advances over the contiguous prefix
    of finished rows, so hashing overlaps rendering instead of re-reading the whole file afterwards.
    The result equals ``sha256_file`` of the flushed file: the header bytes, then the rows in order.
    """

    def __init__(self, array: np.memmap):
        self.array = array
        with open(array.filename, "rb") as handle:
            self._hash = hashlib.sha256(handle.read(array.offset))  # the .npy header, written before the map
        self._finished: dict[int, int] = {}  # start row -> stop row of finished blocks beyond the hashed prefix
        self.hashed_rows = 0

    def add(self, start: int, stop: int) -> None:
        """Rows ``start:stop`` hold their final bytes; hash every finished row the prefix now reaches."""
        self._finished[start] = stop
        while self.hashed_rows in self._finished:
            stop = self._finished.pop(self.hashed_rows)
            self._hash.update(np.ascontiguousarray(self.array[self.hashed_rows:stop]))
            self.hashed_rows = stop

    def hexdigest(self) -> str:
        """The file's sha256; every row must have been added."""
        if self.hashed_rows != len(self.array):
            raise RuntimeError(f"only {self.hashed_rows} of {len(self.array)} rows were hashed")
        return self._hash.hexdigest()


def dataset_digest(files: dict[str, str]) -> str:
    """One sha256 over the sorted per-file sha256s: the dataset's identity."""
    return hashlib.sha256("\n".join(sorted(files.values())).encode()).hexdigest()


def json_default(value):
    """json.dumps ``default``: numpy scalars as Python numbers."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


def image_set_file(name: str) -> str:
    """The images file of one image set of a multi-instrument dataset."""
    return IMAGE_SET_FILE.format(name=name)


def data_files(manifest: dict) -> tuple[str, ...]:
    """The data files a manifest must list: ``images.npy``, or one images file per image set, then labels and params."""
    sets = manifest.get("image_sets")
    if not sets:
        return DATA_FILES
    return (*(image_set_file(entry["name"]) for entry in sets), LABELS_FILE, PARAMS_FILE)


def check_image_sets(path: Path, manifest: dict) -> None:
    """DatasetError unless a manifest's ``image_sets`` (when present) is a list of well-formed entries named by their file."""
    sets = manifest.get("image_sets")
    if sets is None:
        return
    keys = {"name", "file", "image_size", "num_images"}
    ok = isinstance(sets, list) and sets and all(isinstance(e, dict) and keys <= set(e) for e in sets)
    # The file must be the one its name gives: a manifest never points outside the directory.
    if not ok or any(e["file"] != image_set_file(str(e["name"])) or "/" in str(e["name"]) for e in sets):
        raise DatasetError(f"dataset {path} has malformed image_sets in manifest.json; {REBUILD_HINT}")


def owned_files(path: Path) -> tuple[str, ...]:
    """The names in a dataset directory that dlfm writes: the data files, the manifest, any image-set files and shards."""
    return (*DATA_FILES, MANIFEST_FILE, *sorted(p.name for p in path.glob(IMAGE_SET_PATTERN)),
            *sorted(p.name for p in path.glob(SHARD_PATTERN) if p.name.split("-")[0] in SPLITS))


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write ``manifest.json`` (sorted keys, numpy scalars as numbers)."""
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=json_default) + "\n")


def write_images(directory: Path, images: np.ndarray) -> None:
    """Save images as ``images.npy`` (float32, N×1×H×W); the simulator fills a memmap of that file instead."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be N×1×H×H, got {images.shape}")
    np.save(directory / IMAGES_FILE, np.ascontiguousarray(images, dtype=np.float32))


def finish_dataset(directory: Path, labels, table, manifest: dict, images_sha256: str | None = None) -> dict:
    """Beside an ``images.npy`` already in ``directory``, write labels.npy, params.csv and manifest.json.

    ``table`` is the params DataFrame (``split`` and ``label`` columns first); ``manifest`` holds the
    writer's own fields, to which the format, the files' sha256s and the digest are added here.
    ``images_sha256`` skips re-reading an images.npy that was hashed while it was written. A manifest with
    ``image_sets`` covers their images files (written beforehand) instead of images.npy. Returns the manifest.
    """
    np.save(directory / LABELS_FILE, np.asarray(labels, dtype=np.int64))
    table.to_csv(directory / PARAMS_FILE, index=False)
    files = {name: images_sha256 if name == IMAGES_FILE and images_sha256 else sha256_file(directory / name)
             for name in data_files(manifest)}
    manifest = {**manifest, "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "files": files, "digest": dataset_digest(files)}
    write_manifest(directory, manifest)
    return manifest


def read_manifest(path: Path) -> dict:
    """The parsed ``manifest.json`` of a dataset directory, checked for files and digest (not verified)."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise DatasetError(
            f"{path} has no manifest.json, so it is not a dlfm dataset directory; "
            "simulate it (mlflow run . -e simulate) or pass a DeepLense class folder"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"dataset {path} has an unreadable manifest.json ({error}); {REBUILD_HINT}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or "digest" not in manifest:
        raise DatasetError(f"dataset {path} has a manifest.json without files/digest; {REBUILD_HINT}")
    return manifest


def verify_dataset_dir(path) -> dict:
    """Check every file's sha256 against manifest.json; return the manifest or raise DatasetError."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"dataset directory {path} does not exist; simulate it first or pass an existing directory")
    manifest = read_manifest(path)
    check_image_sets(path, manifest)
    files = manifest["files"]
    for name in data_files(manifest):
        if name not in files:
            raise DatasetError(f"dataset {path} manifest does not list {name}; {REBUILD_HINT}")
    for name, expected in sorted(files.items()):
        file_path = path / name
        if not file_path.is_file():
            raise DatasetError(f"dataset {path} is missing {name}; {REBUILD_HINT}")
        if sha256_file(file_path) != expected:
            raise DatasetError(f"dataset {path} is corrupt ({name} sha256 mismatch); {REBUILD_HINT}")
    if dataset_digest(files) != manifest["digest"]:
        raise DatasetError(f"dataset {path} is corrupt (manifest digest mismatch); {REBUILD_HINT}")
    return manifest


def verified_cache(target: Path, config_digest: str) -> bool:
    """True if ``target`` holds a dataset that verifies and was made from ``config_digest``; False if absent.

    A corrupt cache, or one made from other settings, is a DatasetError: it is never used, never silently replaced.
    """
    if not target.exists():
        return False
    try:
        manifest = verify_dataset_dir(target)
    except DatasetError as error:
        raise DatasetError(f"dataset cache {target} is corrupt ({_reason(error)}); {REBUILD_HINT}") from None
    if manifest.get("config_digest") != config_digest:
        raise DatasetError(
            f"dataset cache {target} was made from other settings (config digest differs); "
            f"{REBUILD_HINT}"
        )
    return True


def check_dataset_owned(path: Path, force_option: str = "-P force=true", target_option: str = "out_dir") -> None:
    """Refuse (one line) to replace a dataset directory that holds files dlfm did not write.

    The options named in the message are the caller's: ``mlflow run . -e simulate`` params by default.
    """
    if path.is_symlink() or not path.is_dir():
        raise DatasetError(f"{path} is not a dataset directory dlfm made, so {force_option} will not replace it; "
                           f"move it away or pass another {target_option}")
    owned = owned_files(path)
    foreign = sorted(p.name for p in path.iterdir() if p.name not in owned or p.is_dir() or p.is_symlink())
    if foreign:
        raise DatasetError(f"{path} holds files dlfm did not write ({', '.join(foreign[:3])}), so {force_option} will not "
                           f"replace it; move them away or pass another {target_option}")


def write_atomically(target: Path, fill: Callable[[Path], None], force_option: str = "-P force=true",
                     target_option: str = "out_dir") -> Path:
    """Build a dataset directory with ``fill(scratch)`` in a temporary directory beside ``target``, then
    rename it into place, so a crash never leaves half a dataset. An existing ``target`` is swapped out
    (the caller decided to rebuild it) only when it holds nothing but dlfm's own files, and only those
    are removed; if another process finished the same target first, theirs is kept when it verifies.
    ``force_option`` and ``target_option`` name the caller's options in the refusal.
    """
    out_dir = target.parent
    if target.exists():
        check_dataset_owned(target, force_option, target_option)  # before any work: a rebuild never deletes the user's files
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=out_dir))
    except OSError as error:
        raise DatasetError(
            f"cannot write datasets to {out_dir} ({error.strerror or error}); pass a writable {target_option}"
        ) from None
    try:
        fill(scratch)
        scratch.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700: the dataset gets the mode any mkdir would give it
        if target.exists():  # force: swap the old copy out, then remove only the files dlfm writes
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=out_dir))
            os.replace(target, old / "dataset")
            os.replace(scratch, target)
            remove_owned_tree(old / "dataset", owned_files(old / "dataset"))
            old.rmdir()
        else:
            try:
                os.replace(scratch, target)
            except OSError:
                if not target.exists():
                    raise
                # Another process finished the same dataset first: keep theirs if it verifies.
                shutil.rmtree(scratch, ignore_errors=True)
                verify_dataset_dir(target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target


def current_umask() -> int:
    """The process umask (read by setting it and putting it back: POSIX has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(error: DatasetError) -> str:
    """The part of a verification error that says what is wrong (before the fix)."""
    return str(error).split("; ")[0]
