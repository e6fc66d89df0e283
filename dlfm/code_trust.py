"""Registry trust from a check of what runs: the dlfm code a version carries equals the installed dlfm, file by file.

Every registered encoder carries a copy of the ``dlfm`` package as its pyfunc ``code_paths``, and
``mlflow.pyfunc.load_model`` imports that copy. Anyone who can write to the registry can register
an edited copy, so dlfm never trusts a version for being "dlfm-shaped": ``promote``, ``transfer``
and ``evaluate`` compare the carried code's sha256 digests with the installed dlfm's and refuse any
difference, and the carried ``dlfm/__init__.py`` makes the same comparison when the pyfunc loader
imports it. Standard library only: this runs before anything else of dlfm is imported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

IGNORED_DIRS = ("__pycache__",)  # what registry.package_code leaves out of the copy, and what is not code
IGNORED_SUFFIXES = (".pyc",)


class CodeMismatch(ImportError):
    """The carried dlfm code is not the installed dlfm's (an ImportError, so mlflow.pyfunc's load fails at import)."""


def package_digests(root: Path) -> dict[str, str]:
    """{path relative to the package: sha256} of every file of a dlfm package directory (caches left out)."""
    found = {}
    for path in sorted(Path(root).rglob("*")):
        relative = path.relative_to(root)
        if path.is_dir() or any(part in IGNORED_DIRS for part in relative.parts) or path.suffix in IGNORED_SUFFIXES:
            continue
        found[relative.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def first_difference(carried: Path, installed: Path) -> str | None:
    """The first file in which the ``carried`` dlfm differs from the ``installed`` one (None when identical)."""
    mine, theirs = package_digests(carried), package_digests(installed)
    for name in sorted(set(mine) | set(theirs)):
        if mine.get(name) != theirs.get(name):
            return f"dlfm/{name} " + ("differs" if name in mine and name in theirs else
                                      "is missing" if name in theirs else "is not in the installed dlfm")
    return None


def installed_package_dir(excluding: Path) -> Path | None:
    """The installed dlfm package directory, found as if the model's code directory were not on sys.path."""
    import importlib.machinery
    import sys

    excluding = excluding.resolve()
    paths = [entry for entry in sys.path if Path(entry or ".").resolve() != excluding.parent]
    spec = importlib.machinery.PathFinder.find_spec("dlfm", paths)
    finders = [f for f in sys.meta_path if f is not importlib.machinery.PathFinder]  # e.g. an editable install's finder
    for finder in finders:
        if spec is not None and spec.origin and Path(spec.origin).resolve().parent != excluding:
            break
        try:
            spec = finder.find_spec("dlfm", None) if hasattr(finder, "find_spec") else None
        except Exception:  # a third-party finder that cannot answer is no installed dlfm
            spec = None
    if spec is None or not spec.origin or Path(spec.origin).resolve().parent == excluding:
        return None
    return Path(spec.origin).resolve().parent


def check_model_copy(package_dir: Path) -> None:
    """Called by ``dlfm/__init__.py``: inside a model's ``code/`` directory, refuse a copy that is not the installed dlfm."""
    package_dir = Path(package_dir).resolve()
    if not (package_dir.parent.name == "code" and (package_dir.parent.parent / "MLmodel").is_file()):
        return  # an ordinary import of dlfm, not a registered model's copy
    installed = installed_package_dir(package_dir)
    if installed is None:
        raise CodeMismatch("dlfm: error: this dlfm-encoder version carries dlfm code and no installed dlfm is there to "
                           "check it against; install dlfm (pip install -e .) before loading it")
    why = first_difference(package_dir, installed)
    if why:
        raise CodeMismatch(f"dlfm: error: this dlfm-encoder version carries dlfm code that is not the installed dlfm's "
                           f"({why}), so it will not be loaded; load a version registered by this dlfm")
