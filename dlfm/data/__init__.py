"""Datasets: the dataset-directory format (``layout``), verified simulated datasets, the user's own
DeepLense folders and arrays (``user_files``, ``user_arrays``, written by ``importer``), and resolving what a user passes to a ``LensDataset``."""

from dlfm.data.dataset import DERIVED_TARGETS, REGRESSION_TARGETS, LensDataset, normalize_images
from dlfm.data.deeplense import load_deeplense_folder
from dlfm.data.layout import SPLITS, verify_dataset_dir
from dlfm.data.resolve import load_dataset, resolve_dataset, split_tensors

__all__ = [
    "LensDataset",
    "REGRESSION_TARGETS",
    "DERIVED_TARGETS",
    "SPLITS",
    "load_dataset",
    "resolve_dataset",
    "split_tensors",
    "verify_dataset_dir",
    "load_deeplense_folder",
    "normalize_images",
]
