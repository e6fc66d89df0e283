"""Pick the row of the source table that claims a spec, and call it."""

from __future__ import annotations

from pathlib import Path

from dlfm.errors import DatasetError
from dlfm.sources.base import Request, Source
from dlfm.sources.table import SOURCES

PRESET_ROWS = ("preset", "corpus")  # the named rows the messages list


def _names() -> str:
    return ", ".join(name for row in SOURCES if row.name in PRESET_ROWS for name in row.names)


def source_for(spec: str, sources: tuple[Source, ...] = SOURCES) -> Source | None:
    """The first row of ``sources`` that claims ``spec``, or None."""
    return next((row for row in sources if row.claims(spec)), None)


def resolve_dataset(spec: str, n_train: int = 3000, n_val: int = 600, n_test: int = 600, seed: int = 0,
                    workers: int | None = None, mix: str = ""):
    """Any dataset spec (a preset or corpus name, simulated and cached if missing; s3://; a dataset directory;
    DeepLense folders; a folder of images) → LensDataset (MultiInstrumentDataset for several image sizes)."""
    spec = str(spec)
    row = source_for(spec)
    if row is None:
        if not Path(spec).exists():
            raise DatasetError(f"dataset {spec!r} is neither a preset ({_names()}) nor an existing path; "
                               "pass a preset name or a dataset directory")
        raise _unclaimed(Path(spec))
    return row.load(spec, Request(n_train=n_train, n_val=n_val, n_test=n_test, seed=seed, workers=workers, mix=mix))


def load_dataset(path, normalize: bool = True, verify: bool = True):
    """A local path (a dataset directory, verified by sha256; DeepLense class folders; a folder of .npy images) → dataset."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset path {path} does not exist; pass a preset name ({_names()}) or a dataset directory")
    row = source_for(str(path), tuple(row for row in SOURCES if row.local_path))
    if row is None:
        raise _unclaimed(path)
    return row.load(str(path), Request(normalize=normalize, verify=verify))


def _unclaimed(path: Path) -> DatasetError:
    """The one line for an existing local path that no row claims: what it is not, and what to do."""
    if not path.is_dir():
        return DatasetError(f"dataset path {path} is a file; pass a dataset directory or a DeepLense class folder")
    return DatasetError(
        f"{path} is neither a dlfm dataset (no manifest.json), a DeepLense folder (class subfolders no/sphere/vort "
        "or no_sub/cdm/axion) nor a folder of .npy images; for other class folders run `dlfm dataset import`")
