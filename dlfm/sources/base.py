"""What a row of the source table is (``Source``), what every caller may ask of a source (``Request``), and the
cheap look at a path that the path sources share to answer "is this spec mine?"."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dlfm.constants import DATA_DIR
from dlfm.data.dataset import LensDataset
from dlfm.data.layout import MANIFEST_FILE, read_manifest
from dlfm.data.multi import MultiInstrumentDataset
from dlfm.errors import DatasetError

Dataset = LensDataset | MultiInstrumentDataset


@dataclass(frozen=True)
class Request:
    """What the caller asks of whichever source takes the spec (each source reads the fields that concern it)."""

    n_train: int = 3000  # images in the train split, when the source simulates them
    n_val: int = 600  # images in the validation split, when simulated
    n_test: int = 600  # images in the test split, when simulated
    seed: int = 0  # simulation seed
    workers: int | None = None  # simulation processes (None: one per core)
    mix: str = ""  # a multi-instrument corpus's shares, instrument=weight (empty: the corpus's default)
    normalize: bool = True  # min-max normalise each image on access
    verify: bool = True  # check a dataset directory's sha256 digests before reading it
    data_dir: str = DATA_DIR  # where simulated presets and s3:// downloads are cached


@dataclass(frozen=True)
class Source:
    """One row of the source table: one kind of dataset spec."""

    name: str  # the row's name, e.g. "preset"
    takes: str  # what spec it takes, in words, for the message when no row claims a spec
    claims: Callable[[str], bool]  # "is this spec mine?": cheap, never raises
    load: Callable[[str, Request], Dataset]  # "load it": the dataset, or one DatasetError/ConfigError line
    local_path: bool = False  # the spec is a path on this machine (what ``load_dataset`` takes), not a name or a URI
    names: tuple[str, ...] = ()  # the spec names a named source takes, for messages


def directory(spec: str) -> Path | None:
    """``spec`` as an existing directory, or None (for a name, a URI, a file or a string no path can be)."""
    try:
        path = Path(spec)
        return path if path.is_dir() else None
    except (OSError, ValueError):  # a NUL byte or a name too long for the file system
        return None


def manifest_of(path: Path) -> dict | None:
    """A directory's dlfm manifest: None without manifest.json, {} when it is there but unreadable (its loader says why)."""
    if not (path / MANIFEST_FILE).exists():
        return None
    try:
        return read_manifest(path)
    except DatasetError:
        return {}
