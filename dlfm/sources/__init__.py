"""Sources of data: from what a user passes as a dataset to a ``LensDataset``, one row per kind of spec.

The table (``table.SOURCES``) has one row per kind: a preset name (simulated on demand), a multi-instrument corpus
name (simulated on demand), ``s3://`` (downloaded and verified), a dataset directory, a multi-instrument
directory, DeepLense class folders, and a folder of images. Each row is one file here that answers two
questions, "is this spec mine?" (``claims``, cheap, never raises) and "load it" (``load``, given a ``Request``
with the split sizes, seed and reading options). ``resolve`` asks the rows in order and calls the first that
claims the spec, so a spec enters each room once. A new kind (a sharded corpus next) is one new file plus one row.

Why a package of its own, above ``dlfm.simulation``: two rows simulate, and the simulator writes dataset
directories in ``dlfm.data``'s format. If resolution lived in ``dlfm.data`` it would import the simulator that
imports it, a circle. So the layers are, top to bottom: ``dlfm.sources`` (which spec is which, and loading it),
``dlfm.simulation`` (making presets), ``dlfm.data`` (the dataset types, the directory format and the safe readers:
``safe_npy``, the user's image files, DeepLense folders, ``remote``). Nothing below imports back up; like
torchvision's ``datasets``, the rows are thin files over shared readers and one dataset type.
"""

from dlfm.sources.base import Request, Source
from dlfm.sources.resolve import load_dataset, resolve_dataset, source_for
from dlfm.sources.table import SOURCES

__all__ = ["SOURCES", "Request", "Source", "load_dataset", "resolve_dataset", "source_for"]
