"""Render every image of a dataset, in this process or a pool of forked workers.

Reproducibility: image ``j`` of split ``s`` draws everything from
``default_rng(SeedSequence([seed, s, j]))``, so files are byte-identical whatever the number
of workers, and the train images do not change when only ``n_val``/``n_test`` change.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import multiprocessing
import sys

import numpy as np

from dlfm.data.layout import SPLITS
from dlfm.simulation import physics
from dlfm.simulation.config import SimulationConfig
from dlfm.simulation.presets import Preset
from dlfm.simulation.renderer import LensRenderer


_WORKER: dict = {}


def _single_threaded_blas():
    """Context that keeps BLAS on one thread: the PSF products are tiny, and spinning BLAS
    threads in every worker process fight over the cores (2 workers ran slower than 1)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _init_worker(preset: Preset, vary_lens: bool, theta_E_unit: float, seed: int) -> None:
    """Pool initializer: build the lenstronomy models once per worker process.

    A forked worker inherits the parent's renderer (~90 ms of set-up saved per worker);
    a spawned one builds its own.
    """
    _WORKER["blas_limit"] = _single_threaded_blas().__enter__()  # held for the worker's life
    if _WORKER.get("key") != (preset, vary_lens, theta_E_unit):
        _WORKER["renderer"] = LensRenderer(preset, vary_lens, theta_E_unit)
        _WORKER["key"] = (preset, vary_lens, theta_E_unit)
    _WORKER["seed"] = seed


def _render_rows(renderer: LensRenderer, seed: int, rows: list[tuple]) -> tuple[list[int], np.ndarray, list[dict]]:
    """Render (row, split_code, j, class_name) tasks with per-image SeedSequences."""
    size = renderer.preset.image_size
    images = np.empty((len(rows), size, size), dtype=np.float32)
    params = []
    for k, (_row, split_code, j, class_name) in enumerate(rows):
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_code, j]))
        images[k], params_k = renderer.render(rng, class_name)
        params.append(params_k)
    return [row[0] for row in rows], images, params


def _render_chunk(rows: list[tuple]):
    return _render_rows(_WORKER["renderer"], _WORKER["seed"], rows)


def plan_rows(config: SimulationConfig, preset: Preset) -> tuple[list[tuple], list[str], list[int]]:
    """Rows ordered train, val, test; classes cycle within a split, so every split is balanced.

    Split of n images over K classes: class k gets n // K images, and the first n % K classes
    one more (row j of a split has class j % K).
    """
    tasks, splits, labels = [], [], []
    sizes = config.split_sizes
    n_classes = len(preset.class_names)
    for split_code, split in enumerate(SPLITS):
        for j in range(sizes[split]):
            label = j % n_classes
            tasks.append((len(tasks), split_code, j, preset.class_names[label]))
            splits.append(split)
            labels.append(label)
    return tasks, splits, labels


def _fork_context():
    # Fork is much cheaper than spawn (no re-import of lenstronomy/astropy, ~3 s per worker,
    # and the numba kernel compiled in the parent is inherited). Workers only run numpy, scipy
    # and lenstronomy code and never touch torch or mlflow state, so threads those libraries
    # may have started in the parent do not matter.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def render_all(config, preset, tasks, images_out, workers: int, progress: bool) -> list[dict]:
    """Render ``tasks`` into ``images_out`` (N×1×H×W) here (workers=1) or in forked workers; return each row's params."""
    from tqdm.auto import tqdm

    theta_E_unit = float(physics.einstein_radius(1.0, preset.cosmology))
    params: list[dict | None] = [None] * len(tasks)
    bar = tqdm(
        total=len(tasks),
        desc=f"simulate {config.preset}",
        unit="img",
        disable=not (progress and sys.stderr.isatty()),
    )

    def store(rows, images, chunk_params):
        images_out[rows[0] : rows[-1] + 1, 0] = images  # chunks are contiguous runs of rows
        for row, p in zip(rows, chunk_params):
            params[row] = p
        bar.update(len(rows))

    with bar:
        if workers == 1:
            renderer = LensRenderer(preset, config.vary_lens, theta_E_unit)
            with _single_threaded_blas():
                for start in range(0, len(tasks), 64):
                    store(*_render_rows(renderer, config.seed, tasks[start : start + 64]))
        else:
            # Build the renderer here and render one throwaway image: the numba kernels compile
            # once, and forked workers inherit both the models and the compiled code.
            renderer = LensRenderer(preset, config.vary_lens, theta_E_unit)
            renderer.render(np.random.default_rng(0), preset.class_names[-1])
            _WORKER.update(renderer=renderer, key=(preset, config.vary_lens, theta_E_unit))
            chunk = max(1, min(64, math.ceil(len(tasks) / (workers * 4))))
            chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
            try:
                with concurrent.futures.ProcessPoolExecutor(
                    max_workers=workers,
                    mp_context=_fork_context(),
                    initializer=_init_worker,
                    initargs=(preset, config.vary_lens, theta_E_unit, config.seed),
                ) as pool:
                    futures = [pool.submit(_render_chunk, c) for c in chunks]
                    try:
                        for future in concurrent.futures.as_completed(futures):
                            store(*future.result())
                    except BaseException:
                        for future in futures:
                            future.cancel()
                        raise
            finally:
                _WORKER.clear()  # the parent keeps no worker state
    return params
