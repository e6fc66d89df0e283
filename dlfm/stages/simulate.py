"""The simulate stage: a cached lenstronomy dataset, logged as a run input with its manifest."""

from __future__ import annotations

from dataclasses import dataclass

from dlfm import tracking
from dlfm.constants import DATA_DIR


@dataclass(frozen=True)
class SimulateOptions:
    """How the simulate entry point runs, beside what it simulates (``SimulationConfig``)."""

    out_dir: str = DATA_DIR  # the dataset lands in <out_dir>/<preset>-<config digest>/
    workers: int = 0  # simulation processes (0 = all cores); the bytes are identical for any value
    force: bool = False  # rebuild even if a verified cache exists
    shard_images: int = 0  # write a sharded corpus of Parquet shards of this many images, each written as the pool renders it (<out_dir>/<preset>-<digest>-shards<K>/; 0 = one images.npy)
    experiment_name: str = ""  # MLflow experiment of a run dlfm starts (empty: MLFLOW_EXPERIMENT_NAME, else deeplense-fm); not an MLproject param: `mlflow run --experiment-name` files those runs


def run_simulate_stage(config, out_dir: str = DATA_DIR, workers: int | None = None, force: bool = False,
                       experiment_name: str = "", shard_images: int = 0) -> dict:
    """Simulate (or reuse) the dataset of ``config`` inside one tracked run; return its dir and digest."""
    if shard_images:
        return run_simulate_shards(config, out_dir, workers, force, experiment_name, shard_images)
    from dlfm.sources import load_dataset
    from dlfm.plots.examples import plot_examples
    from dlfm.simulation import simulate_dataset

    run_name = f"simulate-{config.preset}-{config.n_train}-{config.n_val}-{config.n_test}"
    description = (f"Simulate the {config.preset} preset with lenstronomy: {config.n_train}/{config.n_val}/{config.n_test} "
                   f"train/val/test images, seed {config.seed}.")
    with tracking.stage_run("simulate", run_name, experiment_name, description=description) as run_id:
        config.validate()
        tracking.log_params({**vars(config), "out_dir": out_dir, "workers": workers or 0, "force": force})
        path = simulate_dataset(config, out_dir=out_dir, workers=workers, force=force)
        dataset = load_dataset(path)
        tracking.log_artifact(path / "manifest.json")
        tracking.log_figure(plot_examples(dataset), "figures/examples.png")
        tracking.log_dataset(dataset, context="simulated")
        tracking.set_tags({"dlfm.dataset_digest": dataset.digest, "dlfm.dataset_dir": str(path)})
        tracking.describe_run(f"{description} Dataset {path} (digest {dataset.digest[:12]}), "
                              f"{dataset.image_size}x{dataset.image_size} px, classes {', '.join(dataset.class_names)}.")
        return {"run_id": run_id, "path": str(path), "digest": dataset.digest}


def run_simulate_shards(config, out_dir: str, workers: int | None, force: bool, experiment_name: str, shard_images: int) -> dict:
    """``-P shard_images=K``: simulate (or reuse) a sharded corpus inside one tracked run; return its dir and digest."""
    from dlfm.data.shards import load_sharded_dir
    from dlfm.errors import ConfigError
    from dlfm.simulation.sharded import simulate_shards

    if isinstance(shard_images, bool) or not isinstance(shard_images, int) or shard_images < 0:
        raise ConfigError(f"shard_images must be a non-negative integer, got {shard_images!r}; pass e.g. -P shard_images=1000")
    run_name = f"simulate-{config.preset}-{config.n_train}-{config.n_val}-{config.n_test}-shards{shard_images}"
    description = (f"Simulate the {config.preset} preset with lenstronomy into Parquet shards of {shard_images} images: "
                   f"{config.n_train}/{config.n_val}/{config.n_test} train/val/test images, seed {config.seed}.")
    with tracking.stage_run("simulate", run_name, experiment_name, description=description) as run_id:
        config.validate()
        tracking.log_params({**vars(config), "out_dir": out_dir, "workers": workers or 0, "force": force,
                             "shard_images": shard_images})
        path = simulate_shards(config, shard_images, out_dir=out_dir, workers=workers, force=force)
        corpus = load_sharded_dir(path)
        tracking.log_artifact(path / "manifest.json")
        tracking.log_dataset(corpus, context="simulated")
        tracking.set_tags({"dlfm.dataset_digest": corpus.digest, "dlfm.dataset_dir": str(path)})
        tracking.describe_run(f"{description} Corpus {path} (digest {corpus.digest[:12]}), "
                              f"{len(corpus.manifest['shards'])} shards.")
        return {"run_id": run_id, "path": str(path), "digest": corpus.digest}
