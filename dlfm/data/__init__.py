"""Datasets below the choice of source: the directory format (``layout``), the safe readers (``safe_npy``, the
user's image files in ``user_files``), the dataset types (``LensDataset``; ``MultiInstrumentDataset`` for several
image sizes), readers of a dataset directory and of DeepLense folders, and the split tensors for the loop.

Which spec is which kind of data, and loading it, is ``dlfm.sources`` (one layer up: it may simulate a preset).
"""

from dlfm.data.dataset import DERIVED_TARGETS, REGRESSION_TARGETS, LensDataset, normalize_images
from dlfm.data.deeplense import load_deeplense_folder
from dlfm.data.layout import SPLITS, verify_dataset_dir
from dlfm.data.tensors import split_tensors

__all__ = [
    "LensDataset",
    "REGRESSION_TARGETS",
    "DERIVED_TARGETS",
    "SPLITS",
    "split_tensors",
    "verify_dataset_dir",
    "load_deeplense_folder",
    "normalize_images",
]
