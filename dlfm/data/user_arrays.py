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

The files are read by ``dlfm.data.user_files`` (every ``.npy`` through the safe reader); each
problem is one DatasetError line that names the file and the fix.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dlfm.data.dataset import LensDataset
from dlfm.data.deeplense import _stratified_split
from dlfm.data.layout import SPLITS
from dlfm.data.user_files import read_images, read_npy_file
from dlfm.errors import ConfigError, DatasetError

__all__ = ["UNLABELLED_CLASS", "UserArrays", "read_user_arrays", "load_image_folder"]

UNLABELLED_CLASS = "unlabelled"  # the one placeholder class of a set without labels
RESERVED_COLUMNS = ("label", "class_name", "source_index")  # params.csv columns the importer writes itself
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
    pixel_scale: float = 0.0  # (arcsec/px) of the images, recorded so an encoder pretrained at a pixel_scale can read them (0 = not stated)


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


def check_classes_fill_splits(labels: np.ndarray, class_names, split: np.ndarray, origin: str) -> None:
    """Stop at import what training would crash on later: one class, or a class missing from a split."""
    if len(class_names) < 2:
        raise DatasetError(f"{origin} gives one class ({class_names[0]!r}); a classification dataset needs at least 2 "
                           "classes (import without --labels for an unlabelled pretraining corpus)")
    for k, name in enumerate(class_names):
        counts = {s: int(((split == s) & (labels == k)).sum()) for s in SPLITS}
        short = [s for s in SPLITS if counts[s] == 0]
        if short:
            raise DatasetError(f"class {name!r} has {sum(counts.values())} images, fewer than the splits need "
                               f"(train {counts['train']}, val {counts['val']}, test {counts['test']}: none in {short[0]}); "
                               "add images of it, or drop it")


def check_targets(table: pd.DataFrame, targets: list[str], origin: str, regressed: bool) -> None:
    """Numeric params columns are regression targets: every value finite, and (when regressed) some spread."""
    for column in targets:
        values = table[column].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise DatasetError(f"params {origin} column {column!r} has {len(bad)} non-finite value(s) ({values[bad[0]]} in "
                               f"row {int(bad[0]) + 1}); every target must be a finite number: fix or drop those rows")
        if regressed and len(values) and float(values.max() - values.min()) == 0.0:
            raise DatasetError(f"params {origin} column {column!r} is {values[0]} for every image, so there is nothing "
                               "to regress; drop the column or give it its real values")


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
    if not (np.isfinite(spec.pixel_scale) and spec.pixel_scale >= 0):
        raise ConfigError(f"pixel-scale must be >= 0 arcsec per pixel (0: not stated), got {spec.pixel_scale}; pass e.g. 0.101")
    if spec.val_fraction + spec.test_fraction >= 1.0:
        raise ConfigError(f"val_fraction + test_fraction = {spec.val_fraction + spec.test_fraction} leaves no "
                          "training images; keep the sum below 1")


def _resolve_labels(spec: UserArrays, source, images_path: Path) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Labels (int64 indices) and class names from the class folders, an .npz member or --labels; (None, ()) if none."""
    labels, class_names = source.labels, source.class_names
    if labels is not None and not class_names:  # an .npz `labels` member, read like a --labels file
        labels, class_names = _labels(labels, f"{images_path}:labels", tuple(spec.class_names))
    elif labels is not None and spec.class_names:  # class folders renamed
        if len(spec.class_names) != len(class_names):
            raise DatasetError(f"{images_path} gives {len(class_names)} classes {list(class_names)} but "
                               f"{len(spec.class_names)} class names were passed; pass one name per class or none")
        class_names = tuple(spec.class_names)
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
    elif spec.class_names and labels is None:
        raise DatasetError("class names were passed but there are no labels; pass --labels or class folders")
    if labels is None:
        return None, ()
    if len(labels) != len(source.images):
        raise DatasetError(f"{len(source.images)} images but {len(labels)} labels; give exactly one label per image, in image order")
    check_class_names(tuple(class_names), "--class-names" if spec.class_names else str(spec.labels or images_path))
    empty = [name for k, name in enumerate(class_names) if not (labels == k).any()]
    if empty:
        raise DatasetError(f"class {empty[0]!r} has no images; drop its name or add images of it")
    return labels, tuple(class_names)


def _resolve_split(spec: UserArrays, source, table: pd.DataFrame, labels: np.ndarray, n_classes: int,
                   images_path: Path) -> tuple[np.ndarray, str]:
    """The user's split (folders, .npz member or CSV column; val halved when there is no test), else a stratified one."""
    split, rule = source.split, source.split_rule
    if split is not None:
        split = _user_split(split, f"{images_path} split")
    if "split" in table.columns:
        if split is not None:
            raise DatasetError(f"params {spec.params} has a split column but {images_path} already gives a split; keep one")
        split, rule = _user_split(table["split"], f"params {spec.params}"), "the user's split (params split column)"
    if split is None:
        return (_stratified(labels, n_classes, spec),
                f"stratified seed={spec.seed} val_fraction={spec.val_fraction} test_fraction={spec.test_fraction}")
    if "test" not in set(split.tolist()):  # as for DeepLense folders: val is halved into val and test
        split = split.copy()
        for label in range(n_classes):
            rows = np.flatnonzero((split == "val") & (labels == label))
            rng = np.random.default_rng(np.random.SeedSequence([spec.seed, label]))
            split[rows] = np.where(_stratified_split(len(rows), rng, 0.0, 0.5) == "test", "test", "val")
        rule += f"; val halved into val/test by seed={spec.seed}"
    return split, rule


def read_user_arrays(spec: UserArrays) -> LensDataset:
    """The user's arrays as an in-memory LensDataset (rows ordered train, val, test), or one DatasetError line."""
    _check_fractions(spec)
    images_path = Path(spec.images)
    source = read_images(images_path)
    n = len(source.images)
    labels, class_names = _resolve_labels(spec, source, images_path)
    table = _read_params(Path(spec.params), n, source.files) if spec.params else pd.DataFrame(index=range(n))
    task = "classification" if labels is not None else "regression" if spec.params else "unlabelled"
    if labels is None:
        labels, class_names = np.zeros(n, dtype=np.int64), (UNLABELLED_CLASS,)
    split, split_rule = _resolve_split(spec, source, table, labels, len(class_names), images_path)
    table = table.drop(columns="split", errors="ignore")
    if task == "classification":
        check_classes_fill_splits(labels, class_names, split, str(spec.labels or images_path))

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
    check_targets(table, targets, spec.params, regressed=task == "regression")
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


def load_image_folder(path, seed: int = 0) -> LensDataset:
    """A flat folder of .npy images as an unlabelled LensDataset (seeded split), without writing anything."""
    return read_user_arrays(UserArrays(images=str(path), seed=seed))
