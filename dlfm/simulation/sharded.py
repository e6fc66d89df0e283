"""Simulating straight into a sharded corpus (``-e simulate -P shard_images=K``): the worker pool renders one shard's
rows at a time into a small staging file, which becomes a Parquet shard (``dlfm.data.shards``) before the next
is rendered, so memory holds a shard or two whatever the corpus size.

Each image keeps its per-image SeedSequence (``[seed, split, row in split]``), so its bytes are those of the same
row simulated into ``images.npy``, for any number of workers. A sharded corpus holds images and labels: the
per-image physical parameters (``params.csv``) are not kept, as a pretraining corpus does not read them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from dlfm.data import layout
from dlfm.data.shards import ShardWriter, load_sharded_dir
from dlfm.errors import ConfigError, DatasetError
from dlfm.simulation.config import SIM_VERSION, SimulationConfig
from dlfm.simulation.pool import plan_rows, render_all
from dlfm.simulation.presets import PRESETS

STAGING_FILE = ".staging.npy"  # one shard's rows, rendered by the pool (it maps a file), removed before the rename


def shards_path(config: SimulationConfig, shard_images: int, out_dir="data") -> Path:
    """The directory ``simulate_shards`` writes: out_dir/<preset>-<digest[:10]>-shards<K>."""
    return Path(out_dir) / f"{config.preset}-{config.digest()[:10]}-shards{shard_images}"


def _write_shards(config: SimulationConfig, shard_images: int, target: Path, workers: int) -> None:
    preset = PRESETS[config.preset]
    tasks, splits, labels = plan_rows(config, preset)
    size = preset.image_size
    writer = ShardWriter(target, shard_images)
    staging = target / STAGING_FILE
    for start in range(0, len(tasks), shard_images):
        block = tasks[start:start + shard_images]
        # The same seeds as images.npy's rows (split code, row in split), written at 0..len(block)-1 of the staging file.
        local = [(k, split_code, j, name) for k, (_, split_code, j, name) in enumerate(block)]
        images = np.lib.format.open_memmap(staging, mode="w+", dtype=np.float32, shape=(len(block), 1, size, size))
        render_all(config, preset, local, images, int(min(workers, max(1, len(block) // 16))), progress=False)
        rows = np.array(splits[start:start + len(block)])
        block_labels = np.array(labels[start:start + len(block)], dtype=np.int64)
        for split in layout.SPLITS:  # rows are ordered train, val, test: a block spans at most a boundary or two
            chosen = rows == split
            if chosen.any():
                writer.add(np.array(images[chosen]), block_labels[chosen], split)
        del images
    staging.unlink(missing_ok=True)
    writer.finish({"name": target.name, "preset": config.preset, "task": "unlabelled" if preset.task != "classification" else "classification",
                   "class_names": list(preset.class_names), "seed": config.seed, "config": dataclasses.asdict(config),
                   "config_digest": config.digest(), "sim_version": SIM_VERSION,
                   "image_units": "counts/s per pixel (e- for Euclid), noise included, not normalised"})


def simulate_shards(config: SimulationConfig, shard_images: int, out_dir="data", workers: int | None = None,
                    force: bool = False) -> Path:
    """Simulate ``config`` into a sharded corpus of ``shard_images`` images per shard (or reuse a verified one)."""
    config.validate()
    if isinstance(shard_images, bool) or not isinstance(shard_images, int) or shard_images < 1:
        raise ConfigError(f"shard_images must be a positive integer, got {shard_images!r}; pass e.g. -P shard_images=1000")
    workers = workers or os.cpu_count() or 1
    target = shards_path(config, shard_images, out_dir)
    if target.exists() and not force:
        corpus = load_sharded_dir(target)  # a missing shard is one line naming it; each is verified as it is read
        if corpus.manifest.get("config_digest") != config.digest():
            raise DatasetError(f"corpus {target} was made from other settings (config digest differs); "
                               "rebuild it with -P force=true")
        return target
    return layout.write_atomically(target, lambda scratch: _write_shards(config, shard_images, scratch, workers))
