"""The simulate stage: a cached lenstronomy dataset, logged as a run input with its manifest."""

from __future__ import annotations

from dlfm import tracking


def run_simulate_stage(config, out_dir: str = "data", workers: int | None = None, force: bool = False,
                       experiment_name: str = tracking.DEFAULT_EXPERIMENT) -> dict:
    """Simulate (or reuse) the dataset of ``config`` inside one tracked run; return its dir and digest."""
    from dlfm.data import load_dataset
    from dlfm.plots.examples import plot_examples
    from dlfm.simulation import simulate_dataset

    run_name = f"simulate-{config.preset}-{config.n_train}-{config.n_val}-{config.n_test}"
    with tracking.stage_run("simulate", run_name, experiment_name) as run_id:
        config.validate()
        tracking.log_params({**vars(config), "out_dir": out_dir, "workers": workers or 0, "force": force})
        path = simulate_dataset(config, out_dir=out_dir, workers=workers, force=force)
        dataset = load_dataset(path)
        tracking.log_artifact(path / "manifest.json")
        tracking.log_figure(plot_examples(dataset), "figures/examples.png")
        tracking.log_dataset(dataset, context="simulated")
        tracking.set_tags({"dlfm.dataset_digest": dataset.digest, "dlfm.dataset_dir": str(path)})
        return {"run_id": run_id, "path": str(path), "digest": dataset.digest}
