"""Datasets: verified simulated dataset directories and the user's own DeepLense folders."""

from dlfm.data.dataset import (
    DERIVED_TARGETS,
    REGRESSION_TARGETS,
    SPLITS,
    LensDataset,
    load_dataset,
    normalize_images,
    verify_dataset_dir,
)
from dlfm.data.deeplense import load_deeplense_folder

__all__ = [
    "LensDataset",
    "REGRESSION_TARGETS",
    "DERIVED_TARGETS",
    "SPLITS",
    "load_dataset",
    "verify_dataset_dir",
    "load_deeplense_folder",
    "normalize_images",
]
