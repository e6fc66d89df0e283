"""From what a user passes (a preset, s3://, a dataset dir, DeepLense folders, a folder of .npy images) to a LensDataset, and
from a LensDataset split to the tensors the training loop takes."""

from __future__ import annotations

from pathlib import Path

from dlfm.constants import DATA_DIR, S3_CACHE_SUBDIR
from dlfm.data.dataset import LensDataset, load_dataset_dir
from dlfm.data.deeplense import is_deeplense_folder, load_deeplense_folder
from dlfm.data.layout import MANIFEST_FILE
from dlfm.data.user_arrays import load_image_folder
from dlfm.data.user_files import is_image_folder
from dlfm.errors import DatasetError


def load_dataset(path, normalize: bool = True, verify: bool = True) -> LensDataset:
    """Load a dlfm dataset directory (verified by sha256), a DeepLense class folder or a flat folder of .npy images."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(
            f"dataset path {path} does not exist; pass a preset name (model_ii, model_i, model_iii, regression, pretrain) or a dataset directory"
        )
    if not path.is_dir():
        raise DatasetError(f"dataset path {path} is a file; pass a dataset directory or a DeepLense class folder")
    if (path / MANIFEST_FILE).exists():
        return load_dataset_dir(path, normalize=normalize, verify=verify)
    if is_deeplense_folder(path):
        dataset = load_deeplense_folder(path)
    elif is_image_folder(path):  # an unlabelled corpus: one placeholder class, for the self-supervised objectives
        dataset = load_image_folder(path)
    else:
        raise DatasetError(
            f"{path} is neither a dlfm dataset (no manifest.json), a DeepLense folder (class subfolders no/sphere/vort "
            "or no_sub/cdm/axion) nor a folder of .npy images; for other class folders run `dlfm dataset import`"
        )
    dataset.normalize = normalize
    return dataset


def resolve_dataset(spec: str, n_train: int = 3000, n_val: int = 600, n_test: int = 600, seed: int = 0,
                    workers: int | None = None, mix: str = "") -> LensDataset:
    """A preset or multi-instrument corpus name (simulated and cached if missing), an s3:// dataset dir, a dataset dir
    or a DeepLense folder → LensDataset (MultiInstrumentDataset for several image sizes); ``mix`` is a corpus's shares."""
    # Function-local: lenstronomy and boto3 cost seconds of start-up that a dataset dir does not need.
    from dlfm.simulation import PRESETS, SimulationConfig, simulate_dataset
    from dlfm.corpora import DEFAULT_MIX, MULTI_CORPORA
    from dlfm.simulation.multi import MultiCorpusConfig

    if spec.startswith("s3://"):
        from dlfm.data.remote import fetch_s3_dataset

        dataset = load_dataset(fetch_s3_dataset(spec, cache_dir=f"{DATA_DIR}/{S3_CACHE_SUBDIR}"))
        dataset.manifest["source_uri"] = spec  # the run input then names the S3 URI, not the cache dir
        return dataset
    if spec in PRESETS:
        config = SimulationConfig(preset=spec, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
        config.validate()
        return load_dataset(simulate_dataset(config, out_dir=DATA_DIR, workers=workers))
    if spec in MULTI_CORPORA:
        from dlfm.data.multi import simulate_multi_corpus

        config = MultiCorpusConfig(corpus=spec, mix=mix or DEFAULT_MIX, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
        return load_dataset(simulate_multi_corpus(config, out_dir=DATA_DIR, workers=workers))
    path = Path(spec)
    if not path.exists():
        raise DatasetError(
            f"dataset {spec!r} is neither a preset ({', '.join([*PRESETS, *MULTI_CORPORA])}) nor an existing path; "
            "pass a preset name or a dataset directory"
        )
    return load_dataset(path)


def split_tensors(dataset: LensDataset, split: str):
    """Normalised images and labels of one split as tensors for the loop (one group per image size of a multi-instrument set)."""
    import torch

    from dlfm.training.loop import MultiSizeSplit, SplitTensors

    if hasattr(dataset, "parts"):  # a MultiInstrumentDataset: the loop batches each image size apart
        return MultiSizeSplit(tuple(split_tensors(part, split) for part in dataset.parts.values()), tuple(dataset.parts))

    images = torch.from_numpy(dataset.get_images(split).astype("float32", copy=False))
    labels = torch.from_numpy(dataset.get_labels(split).astype("int64", copy=False))
    return SplitTensors(images, labels)
