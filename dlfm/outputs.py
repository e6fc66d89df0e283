"""Directories dlfm writes, replaced atomically; nothing dlfm did not write is ever deleted.

A report directory carries a marker file listing every file dlfm put there. A directory is only
replaced when it is absent, empty, or marked and holding nothing but the listed files; otherwise
the user's files are in the way and the request is refused with one line. The same rule guards
the dataset caches (:func:`remove_owned_tree`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from dlfm.errors import ConfigError

__all__ = ["REPORT_MARKER", "check_report_dir", "write_report_dir", "remove_owned_tree"]

REPORT_MARKER = ".dlfm-report.json"  # {"files": [relative paths dlfm wrote]}


def _files_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_symlink() or not p.is_dir()}


def _foreign_files(path: Path, owned: Iterable[str]) -> list[str]:
    """Files (and links) under ``path`` that are not in ``owned``."""
    return sorted(_files_under(path) - set(owned))


def check_report_dir(path: str | os.PathLike, param: str = "report_dir") -> None:
    """Refuse a report directory that holds anything dlfm did not write there."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"{param} {str(path)!r} is not a directory dlfm made; pass a new directory, e.g. -P {param}=reports/latest")
    if not path.exists() or not any(path.iterdir()):
        return
    marker = path / REPORT_MARKER
    try:
        owned = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{param} {str(path)!r} is not empty and holds no dlfm report marker, so dlfm will not replace it; "
            f"pass a new or empty directory, e.g. -P {param}=reports/latest"
        ) from None
    foreign = _foreign_files(path, [*owned, REPORT_MARKER])
    if foreign:
        raise ConfigError(
            f"{param} {str(path)!r} holds {len(foreign)} file(s) dlfm did not write (e.g. {foreign[0]!r}); "
            f"move them away or pass another -P {param}=..."
        )


def write_report_dir(path: str | os.PathLike, write: Callable[[Path], object], param: str = "report_dir"):
    """Call ``write(staging_dir)``, then swap the staging dir in for ``path`` in one rename.

    Returns what ``write`` returned. The previous report (checked by :func:`check_report_dir`)
    is moved aside and only its listed files are removed.
    """
    path = Path(path)
    check_report_dir(path, param)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
    try:
        result = write(staging)
        files = sorted(_files_under(staging))
        (staging / REPORT_MARKER).write_text(json.dumps({"files": files}, indent=1))
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent)) / "report"
            os.replace(path, old)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # our own fresh directory
        raise
    if old is not None:
        remove_owned_tree(old, json.loads((old / REPORT_MARKER).read_text())["files"] + [REPORT_MARKER]
                          if (old / REPORT_MARKER).exists() else [])
        old.parent.rmdir()
    return result


def remove_owned_tree(path: str | os.PathLike, owned: Iterable[str]) -> None:
    """Delete the files ``owned`` (relative paths) under ``path``, then its empty folders.

    Refuses (ConfigError) before deleting anything when ``path`` holds any other file.
    """
    path = Path(path)
    owned = set(owned)
    foreign = _foreign_files(path, owned)
    if foreign:
        raise ConfigError(
            f"{path} holds {len(foreign)} file(s) dlfm did not write (e.g. {foreign[0]!r}), so dlfm will not delete it; "
            "move them away and try again"
        )
    for name in owned:
        (path / name).unlink(missing_ok=True)
    for folder in sorted((p for p in path.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: len(p.parts), reverse=True):
        folder.rmdir()
    path.rmdir()
