"""Simulate a dataset into a verified, cached dataset directory (format: ``dlfm.data.layout``)."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

import dlfm
import dlfm.data.layout as layout
from dlfm.errors import ConfigError
import dlfm.simulation.physics as physics
from dlfm.simulation.config import PARAM_COLUMNS, PARAM_UNITS, SIM_VERSION, SimulationConfig
from dlfm.simulation.pool import plan_rows, render_all
from dlfm.simulation.presets import PRESETS

__all__ = ["simulate_dataset", "dataset_path"]


def dataset_path(config: SimulationConfig, out_dir="data") -> Path:
    """The directory ``simulate_dataset`` writes for ``config``: out_dir/<preset>-<digest[:10]>."""
    return Path(out_dir) / f"{config.preset}-{config.digest()[:10]}"


def _software_versions() -> dict:
    import lenstronomy

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "lenstronomy": lenstronomy.__version__,
        "dlfm": dlfm.__version__,
    }


def _write_dataset(config: SimulationConfig, target: Path, workers: int, progress: bool, timings: dict | None = None) -> None:
    """Simulate every image into ``target`` (an empty directory) and write the manifest."""
    preset = PRESETS[config.preset]
    tasks, splits, labels = plan_rows(config, preset)
    size = preset.image_size
    images = np.lib.format.open_memmap(
        target / layout.IMAGES_FILE, mode="w+", dtype=np.float32, shape=(len(tasks), 1, size, size)
    )
    timings = {} if timings is None else timings
    params, images_sha256 = render_all(config, preset, tasks, images, workers, progress, timings)  # checks finiteness too
    started = time.perf_counter()
    images.flush()
    del images

    table = pd.DataFrame(params)
    table.insert(0, "split", splits)
    table.insert(1, "label", labels)
    table.insert(2, "class_name", [preset.class_names[k] for k in labels])
    table = table[list(PARAM_COLUMNS)]
    sizes = config.split_sizes
    class_counts = {
        split: {name: int(((table["split"] == split) & (table["class_name"] == name)).sum()) for name in preset.class_names}
        for split in layout.SPLITS
    }
    theta_E_halo = float(physics.einstein_radius(preset.lens.halo_mass, preset.cosmology))
    manifest = {
        "preset": config.preset,
        "task": preset.task,
        "class_names": list(preset.class_names),
        "image_size": size,
        "num_images": len(tasks),
        "seed": config.seed,
        "config": dataclasses.asdict(config),
        "config_digest": config.digest(),
        "sim_version": SIM_VERSION,
        "preset_settings": preset.to_dict(),
        "theta_E_halo_arcsec": theta_E_halo,
        "theta_E_note": (
            "SIE Einstein radius of the fixed lens from a "
            f"{preset.lens.halo_mass:g} Msun halo with angular-diameter distances (arcsec); "
            "regression and vary_lens draw theta_E from the priors instead"
        ),
        "split_sizes": sizes,
        "class_counts": class_counts,
        "split_rule": "rows ordered train, val, test; within a split row j has class j % n_classes",
        "row_seed": "numpy default_rng(SeedSequence([seed, split_index, row_in_split])), split_index train=0 val=1 test=2",
        "image_units": "counts/s per pixel (e- for Euclid), noise included, not normalised",
        "param_units": PARAM_UNITS,
        "software": _software_versions(),
    }
    # images.npy was hashed while it was rendered (the largest file by far); the small files are hashed there.
    layout.finish_dataset(target, labels, table, manifest, images_sha256=images_sha256)
    timings["write"] = time.perf_counter() - started


def simulate_dataset(
    config: SimulationConfig,
    out_dir="data",
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    timings: dict | None = None,
) -> Path:
    """Simulate ``config`` into out_dir/<preset>-<digest[:10]>/ and return that directory.

    An existing directory that verifies is reused without work; one that fails verification
    raises DatasetError unless ``force``. The dataset is built in a temporary directory beside
    the target and renamed into place, so a crash never leaves half a dataset.
    ``workers`` (default: all cores) forked processes render chunks of images; it is capped at
    one per 16 images, and the files are byte-identical for any value. ``timings`` (a dict, for
    benchmarks/simulate.py) receives the seconds of each phase: pool_start, render, hash, write.
    """
    config.validate()
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}; pass e.g. -P workers=2")
    total = config.n_train + config.n_val + config.n_test
    workers = int(min(workers, max(1, total // 16)))  # tiny datasets are not worth a pool

    target = dataset_path(config, out_dir)
    if not force and layout.verified_cache(target, config.digest()):
        return target
    return layout.write_atomically(target, lambda scratch: _write_dataset(config, scratch, workers, progress, timings))
