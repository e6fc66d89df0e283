"""Render every image of a dataset, in this process or a pool of forked workers.

Reproducibility: image ``j`` of split ``s`` draws everything from
``default_rng(SeedSequence([seed, s, j]))``, so files are byte-identical whatever the number
of workers, and the train images do not change when only ``n_val``/``n_test`` change.

Scaling (issue 15): workers write their rows straight into the shared, memory-mapped
``images.npy`` and send back only the params; the parent hashes the finished prefix of the
file while the workers render, so no serial re-read is left at the end.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import multiprocessing
import sys
import time

import numpy as np

from dlfm.data.layout import SPLITS, RowBlockSha256
import dlfm.simulation.physics as physics
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


def _init_worker(preset: Preset, vary_lens: bool, theta_E_unit: float, seed: int, images_path: str) -> None:
    """Pool initializer: build the lenstronomy models once per worker process and map ``images.npy``.

    A forked worker inherits the parent's renderer (~90 ms of set-up saved per worker);
    a spawned one builds its own. Each worker maps the output file itself (shared pages), so
    rendered images are written in place instead of being pickled back to the parent.
    """
    _WORKER["blas_limit"] = _single_threaded_blas().__enter__()  # held for the worker's life
    if _WORKER.get("key") != (preset, vary_lens, theta_E_unit):
        _WORKER["renderer"] = LensRenderer(preset, vary_lens, theta_E_unit)
        _WORKER["key"] = (preset, vary_lens, theta_E_unit)
    _WORKER["seed"] = seed
    _WORKER["images"] = np.load(images_path, mmap_mode="r+")


def _render_rows(renderer: LensRenderer, seed: int, rows: list[tuple], images_out: np.ndarray) -> tuple[int, int, list[dict]]:
    """Render (row, split_code, j, class_name) tasks (a contiguous run of rows) with per-image
    SeedSequences into ``images_out`` (N×1×H×W); return (first row, stop row, each row's params)."""
    first, stop = rows[0][0], rows[-1][0] + 1
    block = images_out[first:stop, 0]
    params = []
    for k, (_row, split_code, j, class_name) in enumerate(rows):
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_code, j]))
        block[k], params_k = renderer.render(rng, class_name)
        params.append(params_k)
    if not np.isfinite(block).all():  # a renderer bug, not a user error; checked where the pixels are hot in cache
        raise RuntimeError(f"simulation produced non-finite pixels in rows {first}..{stop - 1}")
    return first, stop, params


def _render_chunk(rows: list[tuple]):
    return _render_rows(_WORKER["renderer"], _WORKER["seed"], rows, _WORKER["images"])


def chunk_size(n_tasks: int, workers: int) -> int:
    """Rows per pool task: about 8 tasks per worker, so the last ones balance the load, and at most 32,
    so the finished prefix (which the parent hashes) trails the workers closely. Nothing is pickled back
    but a few params per row, so small chunks cost little."""
    return max(1, min(32, math.ceil(n_tasks / (workers * 8))))


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


def render_all(config, preset, tasks, images_out: np.memmap, workers: int, progress: bool,
               timings: dict | None = None) -> tuple[list[dict], str]:
    """Render ``tasks`` into ``images_out`` (an N×1×H×W ``.npy`` memmap) here (workers=1) or in forked workers
    that write into the same file; return each row's params and the file's sha256, hashed while rendering.

    ``timings`` (if given) receives the seconds of each serial phase: pool_start (until the first chunk
    is back), render, hash (the parent's share, overlapping the workers).
    """
    from tqdm.auto import tqdm

    timings = {} if timings is None else timings
    theta_E_unit = float(physics.einstein_radius(1.0, preset.cosmology))
    params: list[dict | None] = [None] * len(tasks)
    hasher = RowBlockSha256(images_out)
    bar = tqdm(
        total=len(tasks),
        desc=f"simulate {config.preset}",
        unit="img",
        disable=not (progress and sys.stderr.isatty()),
    )
    started = time.perf_counter()
    timings["hash"] = 0.0

    def store(first, stop, chunk_params):
        timings.setdefault("pool_start", time.perf_counter() - started)
        params[first:stop] = chunk_params
        hashing = time.perf_counter()
        hasher.add(first, stop)
        timings["hash"] += time.perf_counter() - hashing
        bar.update(stop - first)

    with bar:
        if workers == 1:
            renderer = LensRenderer(preset, config.vary_lens, theta_E_unit)
            with _single_threaded_blas():
                for start in range(0, len(tasks), 64):
                    store(*_render_rows(renderer, config.seed, tasks[start : start + 64], images_out))
        else:
            # Build the renderer here and render one throwaway image: the numba kernels compile
            # once, and forked workers inherit both the models and the compiled code.
            renderer = LensRenderer(preset, config.vary_lens, theta_E_unit)
            renderer.render(np.random.default_rng(0), preset.class_names[-1])
            _WORKER.update(renderer=renderer, key=(preset, config.vary_lens, theta_E_unit))
            images_out.flush()  # the header and size are on disk before a worker maps the file
            chunk = chunk_size(len(tasks), workers)
            chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
            try:
                with concurrent.futures.ProcessPoolExecutor(
                    max_workers=workers,
                    mp_context=_fork_context(),
                    initializer=_init_worker,
                    initargs=(preset, config.vary_lens, theta_E_unit, config.seed, str(images_out.filename)),
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
    timings["render"] = time.perf_counter() - started
    return params, hasher.hexdigest()
