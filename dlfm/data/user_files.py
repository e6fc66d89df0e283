"""Reading the user's image files: a stacked ``.npy``, an ``.npz``, or a folder of per-image ``.npy`` files.

A folder is flat (files sorted by name) or holds class subfolders of any names (sorted; a label is
the folder's position), either of them optionally inside ``train/`` and ``val/`` (and ``test/``).
Every ``.npy`` byte stream (files and ``.npz`` members) goes through ``dlfm.data.safe_npy.load_npy``:
no pickle is ever run. Each problem is one DatasetError line that names the file and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlfm.data.layout import SPLITS, sha256_file
from dlfm.data.safe_npy import NotNpyError, NpyHeaderError, UnsafeNpyError, check_npy_file, check_npy_header, load_npy, read_npy_header
from dlfm.errors import DatasetError

__all__ = ["ImageSource", "read_images", "read_image_file", "read_npy_file", "is_image_folder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".npy", ".npz")  # the file types of a stacked source


@contextlib.contextmanager
def _npy_errors(name: str):
    """Turn what the safe reader raises about ``name`` into one DatasetError line."""
    try:
        yield
    except NotNpyError as error:
        raise DatasetError(f"{name} is not a .npy file ({error}); save it with numpy.save") from None
    except (UnsafeNpyError, ValueError, EOFError, pickle.UnpicklingError, TypeError) as error:
        raise DatasetError(f"{name} is truncated or not a plain numeric .npy array ({error}); save it again with numpy.save") from None


def read_npy_bytes(path: Path) -> bytes:
    """A .npy file's bytes, read only after its header has been checked against its size on disk."""
    try:
        with _npy_errors(str(path)):
            check_npy_file(path)
        return path.read_bytes()
    except OSError as error:  # _npy_errors lets a plain OSError (no file, no permission) through: nothing is wrong inside
        raise DatasetError(f"cannot read {path} ({error.strerror or error}); check the path and its permissions") from None


def read_npy_file(path: Path) -> np.ndarray:
    """One .npy file through the safe reader (no pickles), or one DatasetError line."""
    return parse_npy(read_npy_bytes(path), str(path))


def parse_npy(raw: bytes, name: str) -> np.ndarray:
    """.npy bytes through the safe reader (no pickles), or one DatasetError line naming ``name``."""
    with _npy_errors(name):
        return load_npy(raw, allow_object=False)


def read_npz_file(path: Path) -> dict[str, np.ndarray]:
    """Every member of an .npz (zip of .npy files), each header checked against its size before it is inflated."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {}
            for info in archive.infolist():
                if info.is_dir():
                    continue
                name = f"{path}:{info.filename}"
                if not info.filename.endswith(".npy"):
                    raise DatasetError(f"{path} holds {info.filename}, which is not a .npy member; save it with numpy.savez")
                with archive.open(info) as stream, _npy_errors(name):
                    check_npy_header(read_npy_header(stream), info.file_size)
                members[info.filename[: -len(".npy")]] = parse_npy(archive.read(info), name)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as error:
        raise DatasetError(f"{path} is not a readable .npz file ({error}); save it with numpy.savez") from None
    if not members:
        raise DatasetError(f"{path} holds no arrays; save the images with numpy.savez(path, images=...)")
    return members


def as_image_stack(array: np.ndarray, name: str) -> np.ndarray:
    """N×H×W or N×1×H×W numeric pixels as float32 N×1×H×W, or one DatasetError line."""
    if array.dtype.kind not in "fiu":
        raise DatasetError(f"{name} holds {array.dtype} data, not image pixels; pass numeric images")
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1] != 1:
        raise DatasetError(f"{name} has shape {array.shape}, expected N×H×H or N×1×H×H single-channel images")
    if array.shape[2] != array.shape[3]:
        raise DatasetError(f"{name} holds {array.shape[2]}×{array.shape[3]} images, which are not square; crop or pad them to H×H")
    if len(array) == 0:
        raise DatasetError(f"{name} holds no images; pass at least one image per split")
    images = np.ascontiguousarray(array, dtype=np.float32)
    for start in range(0, len(images), 4096):
        if not np.isfinite(images[start : start + 4096]).all():
            raise DatasetError(f"{name} contains NaN or infinite pixels; replace them before importing")
    return images


def read_image_file(file: Path, allow_object: bool) -> tuple[np.ndarray, float, str]:
    """One image file, (1,H,W) or (H,W), as (H, W) float32 with its axion mass (eV, NaN if none) and the file's sha256;
    ``allow_object`` admits DeepLenseSim's object arrays ``[image, mass]``."""
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read {file} ({error.strerror}); check its permissions") from None
    sha = hashlib.sha256(raw).hexdigest()
    try:
        # DeepLenseSim saved axion files as object arrays [image, mass]; they go through the
        # restricted unpickler, so a crafted file cannot run code (see dlfm.data.safe_npy).
        array = load_npy(raw, allow_object=allow_object)
    except UnsafeNpyError as error:
        raise DatasetError(f"{file} is refused: {error}; it is not a DeepLense image, remove it") from None
    except NotNpyError as error:
        raise DatasetError(f"{file} is not a .npy file ({error}); remove or replace it") from None
    except NpyHeaderError as error:
        raise DatasetError(f"{file} is refused: {error}; remove or replace it") from None
    except (ValueError, OSError, EOFError, pickle.UnpicklingError, TypeError, AttributeError) as error:
        raise DatasetError(f"{file} is truncated or not a valid .npy image ({error}); remove or replace it") from None

    mass = math.nan
    if array.dtype == object:
        if array.shape != (2,) or not isinstance(array[0], np.ndarray):
            raise DatasetError(f"{file} is an object array but not [image, mass]; remove or replace it")
        try:
            mass = float(array[1])
        except (TypeError, ValueError):
            raise DatasetError(f"{file} has a non-numeric axion mass {array[1]!r}; remove or replace it") from None
        array = array[0]
    if array.dtype.kind not in "fiu":
        raise DatasetError(f"{file} holds {array.dtype} data, not image pixels; remove or replace it")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise DatasetError(f"{file} has shape {array.shape}, expected (1, H, H) or (H, H); remove or replace it")
    image = array.astype(np.float32)
    if not np.isfinite(image).all():
        raise DatasetError(f"{file} contains NaN or infinite pixels; remove or replace it")
    return image, mass, sha


@dataclass
class ImageSource:
    """Images read from the user's path, with what the path itself says about labels, split and files."""

    images: np.ndarray  # float32 N×1×H×W
    fingerprint: list[str]  # lines of per-file sha256s: the content identity of what was read
    labels: np.ndarray | None = None  # int64 class indices from class folders, or an .npz `labels` member as stored
    class_names: tuple[str, ...] = ()  # the class folders' names (sorted); empty for .npz labels
    split: np.ndarray | None = None  # "train" | "val" | "test" per image, from train/val/test folders or an .npz member
    split_rule: str = ""
    files: list[str] | None = None  # relative paths of per-image files, in row order


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _folder_entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """(.npy files, subfolders) of a folder; any other file is refused."""
    entries = _visible(folder)
    others = [p for p in entries if not p.is_dir() and p.suffix != ".npy"]
    if others:
        raise DatasetError(f"{others[0]} is not a .npy file (unknown file type {others[0].suffix or 'without suffix'!r}); "
                           "convert it with numpy.save or move it out of the folder")
    return [p for p in entries if not p.is_dir()], [p for p in entries if p.is_dir()]


def _class_folder_files(folder: Path) -> list[tuple[str | None, Path]]:
    """(class name or None, file) of a flat folder or a folder of class subfolders."""
    files, subfolders = _folder_entries(folder)
    if files and subfolders:
        raise DatasetError(f"{folder} mixes .npy files with subfolders ({subfolders[0].name}/); put every image in a "
                           "class subfolder, or all of them directly in the folder")
    if files:
        return [(None, f) for f in files]
    found = []
    for sub in subfolders:
        inner, nested = _folder_entries(sub)
        if nested:
            raise DatasetError(f"{sub} holds a subfolder ({nested[0].name}/); class folders hold .npy files only")
        if not inner:
            raise DatasetError(f"class folder {sub} holds no .npy files; add images or remove the folder")
        found.extend((sub.name, f) for f in inner)
    return found


def _read_folder(root: Path) -> ImageSource:
    split_dirs = {name: root / name for name in SPLITS if (root / name).is_dir()}
    records: list[tuple[str | None, str | None, Path]] = []  # (split, class name, file)
    if "train" in split_dirs:
        if "val" not in split_dirs:
            raise DatasetError(f"{root} has train/ but no val/; add val/ (and optionally test/) or drop the split folders")
        extra = [p.name for p in _visible(root) if p.name not in SPLITS]
        if extra:
            raise DatasetError(f"{root} has split folders and also {extra[0]}; keep only train/ val/ test/ there")
        for split, folder in split_dirs.items():
            records.extend((split, name, f) for name, f in _class_folder_files(folder))
        labelled = {name is not None for _, name, _ in records}
        if len(labelled) > 1:
            raise DatasetError(f"{root}: some split folders hold class folders and some hold images directly; use one layout")
    else:
        records = [(None, name, f) for name, f in _class_folder_files(root)]
    if not records:
        raise DatasetError(f"{root} holds no .npy images; pass a folder of .npy files, a .npy stack or an .npz")

    class_names = tuple(sorted({name for _, name, _ in records if name is not None}))
    images, fingerprint = None, []
    for row, (_, _, file) in enumerate(records):
        image, _mass, sha = read_image_file(file, allow_object=False)
        if images is None:  # one preallocated block, no list of arrays plus a stacked copy
            images = np.empty((len(records), 1, *image.shape), dtype=np.float32)
        elif image.shape != images.shape[2:]:
            raise DatasetError(f"{file} is {image.shape[0]}×{image.shape[1]} but the other images are "
                               f"{images.shape[2]}×{images.shape[3]}; give every image the same size")
        images[row, 0] = image
        fingerprint.append(f"{file.relative_to(root).as_posix()} {sha}")
    source = ImageSource(images, fingerprint, files=[f.relative_to(root).as_posix() for _, _, f in records])
    if class_names:
        source.class_names = class_names
        source.labels = np.array([class_names.index(name) for _, name, _ in records], dtype=np.int64)
    if split_dirs.get("train") is not None:
        source.split = np.array([s for s, _, _ in records], dtype="<U5")
        source.split_rule = "folders " + "/".join(split_dirs)
    return source


def _read_stack(path: Path) -> ImageSource:
    if path.suffix == ".npy":
        raw = read_npy_bytes(path)  # read once: hashed and parsed from the same bytes
        return ImageSource(as_image_stack(parse_npy(raw, str(path)), str(path)), [f"{path.name} {hashlib.sha256(raw).hexdigest()}"])
    raw_sha = sha256_file(path)
    members = read_npz_file(path)
    if "images" in members:
        images_key = "images"
    elif len(members) == 1:
        images_key = next(iter(members))
    else:
        raise DatasetError(f"{path} holds {sorted(members)} but no `images` member; save it with numpy.savez(path, images=..., labels=...)")
    source = ImageSource(as_image_stack(members[images_key], f"{path}:{images_key}"), [f"{path.name} {raw_sha}"])
    unknown = sorted(set(members) - {images_key, "labels", "split"})
    if unknown:
        raise DatasetError(f"{path} holds an unknown member {unknown[0]!r}; it may hold only images, labels and split")
    source.labels = members.get("labels")  # named and checked like a --labels file
    if "split" in members:
        source.split = np.asarray(members["split"])
        source.split_rule = f"the user's split ({path.name}:split)"
    return source


def read_images(path: Path) -> ImageSource:
    """The images at ``path`` (a .npy stack, an .npz or a folder), with what the path itself says about labels and split."""
    if not path.exists():
        raise DatasetError(f"images {path} does not exist; pass a .npy stack, an .npz or a folder of .npy files")
    if path.is_dir():
        return _read_folder(path)
    if path.suffix not in IMAGE_SUFFIXES:
        raise DatasetError(f"images {path} has an unknown file type {path.suffix or 'without suffix'!r}; "
                           "pass a .npy stack, an .npz or a folder of .npy files")
    try:
        return _read_stack(path)
    except OSError as error:
        raise DatasetError(f"cannot read {path} ({error.strerror or error}); check its permissions") from None


def is_image_folder(path) -> bool:
    """True if ``path`` is a folder with .npy images directly in it (an unlabelled corpus)."""
    path = Path(path)
    return path.is_dir() and any(p.suffix == ".npy" for p in path.iterdir() if not p.name.startswith("."))
