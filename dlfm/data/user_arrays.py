"""The user's own arrays as a LensDataset: images, optional labels or a parameter table, and a split.

Images come from one of:

- a stacked ``.npy`` file, N×H×W or N×1×H×W;
- an ``.npz`` file: its ``images`` member (or its only member), and optionally ``labels`` and ``split``;
- a folder of per-image ``.npy`` files (each H×W or 1×H×W), either flat (sorted by name; unlabelled
  unless labels are given) or in class subfolders of ANY names (sorted; a label is the folder's
  position), either of them optionally inside ``train/`` and ``val/`` (and ``test/``): the user's split.

Labels (integers, or strings that become the class names) come from a ``.npy`` file, the ``.npz``
or the class folders; a parameter CSV (one row per image, in image order or matched by a ``file``
column) makes a regression set, and its ``split`` column is the user's split. Without a user's split
the split is the DeepLense loader's seeded stratified one. A set with neither labels nor parameters
is ``unlabelled``: one placeholder class, fit for the self-supervised objectives only.

Every ``.npy`` byte stream (files and ``.npz`` members) goes through ``dlfm.data.safe_npy.load_npy``:
no pickle is ever run. Each problem is one DatasetError line that names the file and the fix.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dlfm.data.dataset import LensDataset
from dlfm.data.deeplense import _load_image, _stratified_split
from dlfm.data.layout import SPLITS, sha256_file
from dlfm.data.safe_npy import NotNpyError, UnsafeNpyError, load_npy
from dlfm.errors import ConfigError, DatasetError

__all__ = ["UNLABELLED_CLASS", "TASKS", "UserArrays", "read_user_arrays", "is_image_folder", "load_image_folder"]

UNLABELLED_CLASS = "unlabelled"  # the one placeholder class of a set without labels
TASKS = ("classification", "regression", "unlabelled")  # manifest "task" of an imported set
RESERVED_COLUMNS = ("label", "class_name", "source_index")  # params.csv columns the importer writes itself
IMAGE_SUFFIXES = (".npy", ".npz")
CLASS_NAME_PATTERN = re.compile(r"[\w.\- ]+")  # what MLflow metric names (val/auc_<name>) accept, less the slash


@dataclass(frozen=True)
class UserArrays:
    """What the user passed, by path ("" = not given), and how to split it."""

    images: str  # a .npy stack, a .npz, or a folder of per-image .npy files (flat or class subfolders)
    labels: str = ""  # a .npy of integer or string labels, one per image in image order
    params: str = ""  # a CSV with one row per image (in image order, or matched by a `file` column); a `split` column is kept
    class_names: tuple[str, ...] = ()  # names of integer labels 0..K-1 (default: the integers as text)
    seed: int = 0  # seed of the stratified split when the user gives none
    val_fraction: float = 0.15  # share of each class in val when the user gives no split
    test_fraction: float = 0.15  # share of each class in test when the user gives no split


def read_npy_file(path: Path) -> np.ndarray:
    """One .npy file through the safe reader (no pickles), or one DatasetError line."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read {path} ({error.strerror or error}); check the path and its permissions") from None
    return _parse_npy(raw, str(path))


def _parse_npy(raw: bytes, name: str) -> np.ndarray:
    try:
        return load_npy(raw, allow_object=False)
    except NotNpyError as error:
        raise DatasetError(f"{name} is not a .npy file ({error}); save it with numpy.save") from None
    except (UnsafeNpyError, ValueError, OSError, EOFError, pickle.UnpicklingError, TypeError) as error:
        raise DatasetError(f"{name} is truncated or not a plain numeric .npy array ({error}); save it again with numpy.save") from None


def read_npz_file(path: Path) -> dict[str, np.ndarray]:
    """Every member of an .npz (zip of .npy files), each through the safe reader."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {}
            for info in archive.infolist():
                if info.is_dir():
                    continue
                if not info.filename.endswith(".npy"):
                    raise DatasetError(f"{path} holds {info.filename}, which is not a .npy member; save it with numpy.savez")
                members[info.filename[: -len(".npy")]] = _parse_npy(archive.read(info), f"{path}:{info.filename}")
    except (zipfile.BadZipFile, OSError, EOFError) as error:
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


@dataclass
class _Source:
    """Images read from the user's path, with what the path itself says about labels, split and files."""

    images: np.ndarray  # float32 N×1×H×W
    fingerprint: list[str]  # lines of per-file sha256s: the content identity of what was read
    labels: np.ndarray | None = None  # from class folders or an .npz member
    class_names: tuple[str, ...] = ()
    split: np.ndarray | None = None  # from train/val/test folders or an .npz member
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


def _read_folder(root: Path) -> _Source:
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
        image, _mass, sha = _load_image(file, allow_object=False)
        if images is None:  # one preallocated block, no list of arrays plus a stacked copy
            images = np.empty((len(records), 1, *image.shape), dtype=np.float32)
        elif image.shape != images.shape[2:]:
            raise DatasetError(f"{file} is {image.shape[0]}×{image.shape[1]} but the other images are "
                               f"{images.shape[2]}×{images.shape[3]}; give every image the same size")
        images[row, 0] = image
        fingerprint.append(f"{file.relative_to(root).as_posix()} {sha}")
    source = _Source(images, fingerprint, files=[f.relative_to(root).as_posix() for _, _, f in records])
    if class_names:
        source.class_names = class_names
        source.labels = np.array([class_names.index(name) for _, name, _ in records], dtype=np.int64)
    if split_dirs.get("train") is not None:
        source.split = np.array([s for s, _, _ in records], dtype="<U5")
        source.split_rule = "folders " + "/".join(split_dirs)
    return source


def _read_stack(path: Path) -> _Source:
    if path.suffix == ".npy":
        raw = path.read_bytes()  # read once: hashed and parsed from the same bytes
        return _Source(as_image_stack(_parse_npy(raw, str(path)), str(path)), [f"{path.name} {hashlib.sha256(raw).hexdigest()}"])
    raw_sha = sha256_file(path)
    members = read_npz_file(path)
    if "images" in members:
        images_key = "images"
    elif len(members) == 1:
        images_key = next(iter(members))
    else:
        raise DatasetError(f"{path} holds {sorted(members)} but no `images` member; save it with numpy.savez(path, images=..., labels=...)")
    source = _Source(as_image_stack(members[images_key], f"{path}:{images_key}"), [f"{path.name} {raw_sha}"])
    unknown = sorted(set(members) - {images_key, "labels", "split"})
    if unknown:
        raise DatasetError(f"{path} holds an unknown member {unknown[0]!r}; it may hold only images, labels and split")
    if "labels" in members:
        source.labels, source.class_names = _labels(members["labels"], f"{path}:labels", ())
    if "split" in members:
        source.split = _user_split(members["split"], f"{path}:split")
        source.split_rule = f"the user's split ({path.name}:split)"
    return source


def _read_images(path: Path) -> _Source:
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


def _labels(array: np.ndarray, name: str, class_names: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer or string labels as int64 indices into class names."""
    if array.ndim != 1:
        raise DatasetError(f"{name} has shape {array.shape}; labels are one value per image (shape (N,))")
    if array.dtype.kind in "US":
        texts = array.astype(str).tolist()  # Python str: repr without np.str_
        if class_names:
            unknown = sorted(set(texts) - set(class_names))
            if unknown:
                raise DatasetError(f"{name} has label {unknown[0]!r}, not one of the class names {list(class_names)}")
        names = tuple(class_names) or tuple(sorted(set(texts)))
        return np.array([names.index(t) for t in texts], dtype=np.int64), names
    if array.dtype.kind not in "iu":
        raise DatasetError(f"{name} holds {array.dtype} values; labels are integers 0..K-1 or class-name strings")
    labels = array.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DatasetError(f"{name} has a negative label ({labels.min()}); labels are integers 0..K-1")
    count = max(int(labels.max()) + 1 if len(labels) else 0, len(class_names))
    if class_names and count > len(class_names):
        raise DatasetError(f"{name} has label {int(labels.max())} but only {len(class_names)} class names; "
                           "give one name per class")
    return labels, tuple(class_names) or tuple(str(k) for k in range(count))


def _user_split(values, name: str) -> np.ndarray:
    split = np.asarray(values).astype(str)
    bad = sorted(set(split.tolist()) - set(SPLITS))
    if bad:
        raise DatasetError(f"{name} has split value {bad[0]!r}; use train, val or test")
    if "train" not in set(split):
        raise DatasetError(f"{name} puts no image in train; give train at least one image")
    return split.astype("<U5")


def _read_params(path: Path, n: int, files: list[str] | None) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"params {path} does not exist; pass a CSV with one row per image")
    if path.suffix.lower() != ".csv":
        raise DatasetError(f"params {path} has an unknown file type {path.suffix or 'without suffix'!r}; pass a .csv file")
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DatasetError(f"params {path} is not a readable CSV ({str(error).splitlines()[0]}); save it with a header row") from None
    reserved = [c for c in RESERVED_COLUMNS if c in table.columns]
    if reserved:
        raise DatasetError(f"params {path} has a column {reserved[0]!r}, which the importer writes itself; "
                           "rename it, and pass labels with --labels")
    if "file" in table.columns and files is not None:
        table = table.astype({"file": str})
        missing = sorted(set(files) - set(table["file"]))
        if missing or table["file"].duplicated().any() or len(table) != n:
            what = f"no row for {missing[0]}" if missing else "rows that match no image, or one image twice"
            raise DatasetError(f"params {path} has {what}; give one row per image, its `file` relative to the images folder")
        table = table.set_index("file").loc[files].reset_index()
    elif len(table) != n:
        raise DatasetError(f"params {path} has {len(table)} rows for {n} images; give one row per image, in image order")
    return table.reset_index(drop=True)


def check_class_names(names: tuple[str, ...], origin: str) -> None:
    """Class names become metric names (``val/auc_<name>``) and a params.csv column: refuse what either would mangle."""
    for name in names:
        if not CLASS_NAME_PATTERN.fullmatch(name):
            raise DatasetError(f"class name {name!r} (from {origin}) is empty or has characters metric names refuse; "
                               "use letters, digits, _ - . and spaces (rename the folder or pass --class-names)")
    if len(set(names)) != len(names):
        raise DatasetError(f"class names {list(names)} (from {origin}) repeat a name; give each class its own")
    written = pd.DataFrame({"class_name": list(names)}).to_csv(index=False)
    read = pd.read_csv(io.StringIO(written), converters={"class_name": str})["class_name"].tolist()
    changed = [name for name, back in zip(names, read) if back != name]
    if changed:
        raise DatasetError(f"class name {changed[0]!r} (from {origin}) reads back from CSV as a missing value; rename it")


def _stratified(labels: np.ndarray, n_classes: int, spec: UserArrays) -> np.ndarray:
    split = np.empty(len(labels), dtype="<U5")
    for label in range(n_classes):
        rows = np.flatnonzero(labels == label)
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, label]))
        split[rows] = _stratified_split(len(rows), rng, spec.val_fraction, spec.test_fraction)
    return split


def _check_fractions(spec: UserArrays) -> None:
    for name, value in (("val_fraction", spec.val_fraction), ("test_fraction", spec.test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value}; pass e.g. 0.15")
    if spec.val_fraction + spec.test_fraction >= 1.0:
        raise ConfigError(f"val_fraction + test_fraction = {spec.val_fraction + spec.test_fraction} leaves no "
                          "training images; keep the sum below 1")


def read_user_arrays(spec: UserArrays) -> LensDataset:
    """The user's arrays as an in-memory LensDataset (rows ordered train, val, test), or one DatasetError line."""
    _check_fractions(spec)
    images_path = Path(spec.images)
    source = _read_images(images_path)
    n = len(source.images)
    labels, class_names = source.labels, source.class_names
    if spec.labels:
        if labels is not None:
            raise DatasetError(f"{images_path} already gives labels (class folders or an .npz `labels` member); "
                               "drop --labels or pass unlabelled images")
        labels_path = Path(spec.labels)
        if labels_path.suffix != ".npy":
            raise DatasetError(f"labels {labels_path} has an unknown file type {labels_path.suffix or 'without suffix'!r}; "
                               "pass a .npy file (numpy.save)")
        if not labels_path.is_file():
            raise DatasetError(f"labels {labels_path} does not exist; pass a .npy file with one label per image")
        labels, class_names = _labels(read_npy_file(labels_path), str(labels_path), tuple(spec.class_names))
    elif labels is not None and spec.class_names:
        if len(spec.class_names) != len(class_names):
            raise DatasetError(f"{images_path} gives {len(class_names)} classes {list(class_names)} but "
                               f"{len(spec.class_names)} class names were passed; pass one name per class or none")
        class_names = tuple(spec.class_names)
    elif spec.class_names:
        raise DatasetError("class names were passed but there are no labels; pass --labels or class folders")
    if labels is not None and len(labels) != n:
        raise DatasetError(f"{n} images but {len(labels)} labels; give exactly one label per image, in image order")

    table = _read_params(Path(spec.params), n, source.files) if spec.params else pd.DataFrame(index=range(n))
    split, split_rule = source.split, source.split_rule
    if "split" in table.columns:
        if split is not None:
            raise DatasetError(f"params {spec.params} has a split column but {images_path} already gives a split; keep one")
        split, split_rule = _user_split(table["split"], f"params {spec.params}"), "the user's split (params split column)"
        table = table.drop(columns="split")
    if labels is not None:
        check_class_names(tuple(class_names), "--class-names" if spec.class_names else str(spec.labels or images_path))
    task = "classification" if labels is not None else "regression" if spec.params else "unlabelled"
    if labels is None:
        labels, class_names = np.zeros(n, dtype=np.int64), (UNLABELLED_CLASS,)
    if split is None:
        split = _stratified(labels, len(class_names), spec)
        split_rule = f"stratified seed={spec.seed} val_fraction={spec.val_fraction} test_fraction={spec.test_fraction}"
    elif "test" not in set(split):  # as for DeepLense folders: val is halved into val and test
        split = split.copy()
        for label in range(len(class_names)):
            rows = np.flatnonzero((split == "val") & (labels == label))
            rng = np.random.default_rng(np.random.SeedSequence([spec.seed, label]))
            split[rows] = np.where(_stratified_split(len(rows), rng, 0.0, 0.5) == "test", "test", "val")
        split_rule += f"; val halved into val/test by seed={spec.seed}"

    order = np.argsort(np.array([SPLITS.index(s) for s in split]), kind="stable")  # rows train, val, test
    params = pd.DataFrame({"split": split[order], "label": labels[order],
                           "class_name": np.asarray(class_names, dtype=object)[labels[order]],
                           "source_index": order})
    if source.files is not None and "file" not in table.columns:
        params["file"] = np.asarray(source.files, dtype=object)[order]
    params = pd.concat([params, table.iloc[order].reset_index(drop=True)], axis=1)
    targets = [c for c in table.columns if c != "file" and pd.api.types.is_numeric_dtype(table[c])]
    if task == "regression" and not targets:
        raise DatasetError(f"params {spec.params} has no numeric column to regress; add one, or import without --params")
    fingerprint = [*source.fingerprint, f"labels {hashlib.sha256(labels.tobytes()).hexdigest()} {'|'.join(class_names)}",
                   f"params {hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()}", f"split {split_rule}"]
    manifest = {
        "format": "user-arrays",
        "source_path": str(images_path.resolve()),
        "task": task,
        "class_names": list(class_names),
        "image_size": int(source.images.shape[-1]),
        "num_images": n,
        "split_rule": split_rule,
        "split_sizes": {s: int((split == s).sum()) for s in SPLITS},
        "seed": spec.seed,
        "targets": targets,
        "image_units": "as given by the user, not normalised",
        "digest": hashlib.sha256("\n".join(fingerprint).encode()).hexdigest(),
    }
    return LensDataset(images=source.images[order], labels=labels[order], params=params, split=split[order],
                       class_names=tuple(class_names), task=task, manifest=manifest, root=images_path)


def is_image_folder(path) -> bool:
    """True if ``path`` is a folder with .npy images directly in it (an unlabelled corpus)."""
    path = Path(path)
    return path.is_dir() and any(p.suffix == ".npy" for p in path.iterdir() if not p.name.startswith("."))


def load_image_folder(path, seed: int = 0) -> LensDataset:
    """A flat folder of .npy images as an unlabelled LensDataset (seeded split), without writing anything."""
    return read_user_arrays(UserArrays(images=str(path), seed=seed))
