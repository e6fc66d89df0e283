"""Render lensing images with lenstronomy and write verified, cached dataset directories.

Speed: lenstronomy builds a model by looping over profiles in Python, so each worker builds
its models once (SIE + SHEAR lens, Sérsic source, pixel grid, PSF convolution) and per
image only the keyword arguments change. Point masses (subhalos, vortex) are not lenstronomy
profiles here: their deflections are summed in one numpy step and added to the macro-lens
deflection before ray shooting (``physics.point_mass_deflection``, checked against
lenstronomy ``POINT_MASS`` in the tests).

Reproducibility: image ``j`` of split ``s`` draws everything from
``default_rng(SeedSequence([seed, s, j]))``, so files are byte-identical whatever the number
of workers, and the train images do not change when only ``n_val``/``n_test`` change.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dlfm.errors import ConfigError, DatasetError
from dlfm.outputs import remove_owned_tree
from dlfm.simulation import physics
from dlfm.simulation.presets import DEFAULT_PRESET, PRESETS, Preset

__all__ = [
    "SimulationConfig",
    "LensRenderer",
    "simulate_dataset",
    "dataset_path",
    "SPLITS",
    "PARAM_COLUMNS",
    "PARAM_UNITS",
    "SIM_VERSION",
]

# Bump when the rendering changes: it is part of the cache digest, so old caches are not reused.
SIM_VERSION = 1
SPLITS = ("train", "val", "test")

# params.csv columns, in order, with units (also written to the manifest).
PARAM_UNITS = {
    "split": "",
    "label": "class index",
    "class_name": "",
    "theta_E": "arcsec",
    "e1": "",
    "e2": "",
    "gamma1": "",
    "gamma2": "",
    "q": "",
    "phi": "rad, in [0, pi)",
    "gamma_ext": "",
    "psi_ext": "rad, in [0, pi)",
    "lens_x": "arcsec",
    "lens_y": "arcsec",
    "src_x": "arcsec",
    "src_y": "arcsec",
    "src_R": "arcsec",
    "src_n": "",
    "src_e1": "",
    "src_e2": "",
    "src_mag": "mag (NaN when the preset sets an amplitude)",
    "src_amp": "lenstronomy amp (counts/s/arcsec^2 at R_sersic)",
    "n_subhalo": "count of point masses (cdm subhalos or vortex masses)",
    "m_subhalo_total": "Msun",
    "m_subhalo_max": "Msun",
    "axion_mass": "eV (NaN unless axion)",
    "vortex_angle": "rad (NaN unless axion)",
    "vortex_half_length": "arcsec (NaN unless axion)",
    "exposure_time": "s (total)",
}
PARAM_COLUMNS = tuple(PARAM_UNITS)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate; its digest names the cached dataset directory."""

    preset: str = DEFAULT_PRESET  # one of PRESETS: "model_ii", "model_i", "regression"
    n_train: int = 3000  # images in the train split (total over classes)
    n_val: int = 600  # images in the validation split
    n_test: int = 600  # images in the test split
    seed: int = 0  # root of every per-image SeedSequence (>= 0)
    vary_lens: bool = False  # classification presets: draw the macro lens from the regression priors

    def validate(self) -> None:
        """Raise ConfigError naming the bad setting and how to fix it."""
        if self.preset not in PRESETS:
            known = ", ".join(PRESETS)
            raise ConfigError(f"unknown simulation preset {self.preset!r}; choose one of: {known}")
        preset = PRESETS[self.preset]
        for name in ("n_train", "n_val", "n_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{name} must be an integer, got {value!r}; pass a whole number of images")
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}; pass at least 1 image per split")
            n_classes = len(preset.class_names)
            if value < n_classes:
                raise ConfigError(
                    f"{name}={value} is smaller than the {n_classes} classes of {self.preset}; "
                    f"pass at least {n_classes} so every class appears in every split"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}; pass e.g. -P seed=0")
        if not isinstance(self.vary_lens, (bool, np.bool_)):
            raise ConfigError(f"vary_lens must be true or false, got {self.vary_lens!r}")
        if self.vary_lens and preset.task != "classification":
            raise ConfigError(
                f"vary_lens applies to classification presets only; {self.preset} always draws "
                "the lens from its priors, so drop vary_lens"
            )

    def digest(self) -> str:
        """sha256 of the settings, the preset numbers and the renderer version (stable)."""
        self.validate()
        payload = {
            "config": dataclasses.asdict(self),
            "preset": PRESETS[self.preset].to_dict(),
            "sim_version": SIM_VERSION,
        }
        text = json.dumps(payload, sort_keys=True, default=_json_default)
        return hashlib.sha256(text.encode()).hexdigest()


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


def dataset_path(config: SimulationConfig, out_dir="data") -> Path:
    """The directory ``simulate_dataset`` writes for ``config``: out_dir/<preset>-<digest[:10]>."""
    return Path(out_dir) / f"{config.preset}-{config.digest()[:10]}"


# --------------------------------------------------------------------------- rendering


# Dense separable-PSF matrices beat ndimage.gaussian_filter only for small images (64: 3x
# faster; 150: 10x slower). A fixed size rule, never a timing, so the bytes are reproducible.
_MAX_MATRIX_PSF_PIXELS = 96


class _CCDNoise:
    """Euclid-like CCD noise from lenstronomy SingleBand: sky + read-out, and shot noise."""

    def __init__(self, preset: Preset):
        from lenstronomy.SimulationAPI.observation_api import SingleBand

        band = SingleBand(**preset.instrument.kwargs_single_band())
        self._variance_background = band.background_noise**2  # sky + read-out ((e-/s)² per pixel)
        self._total_exposure = band.exposure_time  # (s), all exposures

    def sigma(self, image: np.ndarray) -> np.ndarray:
        """Per-pixel noise sigma (e-/s): SingleBand.estimate_noise, written out for speed.

        Shot-noise variance of a flux f (e-/s) over the total exposure T is max(f, 0) / T.
        """
        return np.sqrt(self._variance_background + np.maximum(image, 0.0) / self._total_exposure)

    def __call__(self, rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, dict]:
        # SingleBand.noise_for_model draws background and shot noise separately (with np.random);
        # their sum is one Gaussian of the summed variance, drawn here from our generator.
        noisy = image + self.sigma(image) * rng.standard_normal(image.shape)
        return noisy, {"exposure_time": self._total_exposure}


class _BackgroundPoissonNoise:
    """DeepLenseSim Model I noise: Gaussian background (counts/s) + Poisson at a random exposure.

    DeepLenseSim then scaled the sum by the exposure time and drew Poisson counts once more,
    counting the shot noise twice; we keep one Poisson draw and store counts/s.
    """

    def __init__(self, preset: Preset):
        self._background_rms = preset.instrument.background_rms  # (counts/s per pixel)
        self._log10_exposure = preset.instrument.log10_exposure_time_range  # (log10 s)

    def __call__(self, rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, dict]:
        exposure_time = 10.0 ** rng.uniform(*self._log10_exposure)  # (s)
        counts = rng.poisson(np.clip(image, 0.0, None) * exposure_time)
        background = rng.normal(0.0, self._background_rms, size=image.shape)
        return counts / exposure_time + background, {"exposure_time": exposure_time}


class LensRenderer:
    """Renders one preset's images. Build once per process; ``render`` per image."""

    def __init__(self, preset: Preset, vary_lens: bool = False, theta_E_per_sqrt_msun: float | None = None):
        from lenstronomy.Data.imaging_data import ImageData
        from lenstronomy.Data.psf import PSF
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel
        from lenstronomy.Util import data_util, simulation_util

        self.preset = preset
        self.vary_lens = bool(vary_lens) or preset.task == "regression"
        if theta_E_per_sqrt_msun is None:
            theta_E_per_sqrt_msun = float(physics.einstein_radius(1.0, preset.cosmology))
        self._theta_E_unit = theta_E_per_sqrt_msun  # θE of 1 M☉ (arcsec)
        self.theta_E_halo = theta_E_per_sqrt_msun * math.sqrt(preset.lens.halo_mass)  # (arcsec)

        instrument = preset.instrument
        self.lens_model = LensModel(["SIE", "SHEAR"])
        self.source_model = LightModel(["SERSIC_ELLIPSE"])
        if instrument.noise_model == "ccd":
            from lenstronomy.SimulationAPI.sim_api import SimAPI

            sim = SimAPI(
                num_pix=instrument.num_pix,
                kwargs_single_band=instrument.kwargs_single_band(),
                kwargs_model={"lens_model_list": ["SIE", "SHEAR"], "source_light_model_list": ["SERSIC_ELLIPSE"]},
            )
            data_class, psf_class = sim.data_class, sim.psf_class
            self._noise = _CCDNoise(preset)
        elif instrument.noise_model == "background_poisson":
            kwargs_data = simulation_util.data_configure_simple(
                instrument.num_pix, instrument.pixel_scale, background_rms=instrument.background_rms
            )
            data_class = ImageData(**kwargs_data)
            psf_class = PSF(
                psf_type="GAUSSIAN",
                fwhm=instrument.psf_fwhm,
                pixel_size=instrument.pixel_scale,
                truncation=instrument.psf_truncation,
            )
            self._noise = _BackgroundPoissonNoise(preset)
        else:
            raise ValueError(f"unknown noise model {instrument.noise_model!r}")
        # The reference lenstronomy image model; its numerics (grid + PSF convolution) are reused.
        self.image_model = ImageModel(
            data_class,
            psf_class,
            lens_model_class=self.lens_model,
            source_model_class=self.source_model,
            kwargs_numerics={"supersampling_factor": 1},
        )
        self._numerics = self.image_model.ImageNumerics
        self._x, self._y = self._numerics.coordinates_evaluate  # (arcsec), 1-d
        self._magnitude2cps = data_util.magnitude2cps
        self._psf_rows, self._psf_cols = self._separable_psf(instrument.num_pix)

    def _separable_psf(self, num_pix: int):
        """lenstronomy's Gaussian PSF convolution as two num_pix×num_pix matrices, or None.

        A Gaussian with 'nearest' edges is separable: convolve(image) = R @ image @ Cᵀ. Two small
        matrix products take ~60 µs instead of ~170 µs for ndimage.gaussian_filter at 64×64 (at
        150×150 the dense products lose, so larger images keep the filter). R and C are
        read off lenstronomy's own convolution (images constant along one axis), then checked.
        """
        if (
            self.image_model.PSF.psf_type != "GAUSSIAN"
            or self._numerics.grid_supersampling_factor != 1
            or num_pix > _MAX_MATRIX_PSF_PIXELS
        ):
            return None, None
        eye = np.eye(num_pix)
        rows = np.stack([self._numerics.re_size_convolve(np.repeat(e[:, None], num_pix, 1).ravel())[:, 0] for e in eye], 1)
        cols = np.stack([self._numerics.re_size_convolve(np.repeat(e[None, :], num_pix, 0).ravel())[0, :] for e in eye], 1)
        cols /= self._numerics.re_size_convolve(np.ones(num_pix * num_pix))[0, 0]  # pixel area counted once
        probe = np.random.default_rng(0).random(num_pix * num_pix)
        reference = self._numerics.re_size_convolve(probe)
        if not np.allclose(rows @ probe.reshape(num_pix, num_pix) @ cols.T, reference, rtol=1e-9, atol=1e-12 * reference.max()):
            return None, None  # not separable after all: keep lenstronomy's convolution
        return rows, cols

    def _convolve(self, flux: np.ndarray) -> np.ndarray:
        """PSF-convolved image (flux × pixel area), 2-d, as lenstronomy ImageNumerics."""
        if self._psf_rows is None:
            return self._numerics.re_size_convolve(flux)
        size = self._psf_rows.shape[0]
        return self._psf_rows @ flux.reshape(size, size) @ self._psf_cols.T

    # -- pieces

    @staticmethod
    def lens_kwargs(lens: dict) -> list[dict]:
        """lenstronomy kwargs for ['SIE', 'SHEAR'] from a sampled lens dict."""
        return [
            {
                "theta_E": lens["theta_E"],
                "e1": lens["e1"],
                "e2": lens["e2"],
                "center_x": lens["lens_x"],
                "center_y": lens["lens_y"],
            },
            {"gamma1": lens["gamma1"], "gamma2": lens["gamma2"], "ra_0": 0.0, "dec_0": 0.0},
        ]

    def source_kwargs(self, source: dict) -> list[dict]:
        """lenstronomy kwargs for ['SERSIC_ELLIPSE']; a magnitude becomes an amplitude."""
        kwargs = {
            "R_sersic": source["src_R"],
            "n_sersic": source["src_n"],
            "e1": source["src_e1"],
            "e2": source["src_e2"],
            "center_x": source["src_x"],
            "center_y": source["src_y"],
        }
        if math.isnan(source["src_mag"]):
            kwargs["amp"] = source["src_amp"]
        else:
            # As SimAPI.magnitude2amplitude: counts/s of the magnitude over the flux at amp = 1.
            cps = self._magnitude2cps(source["src_mag"], self.preset.instrument.magnitude_zero_point)
            kwargs["amp"] = cps / self.source_model.total_flux([kwargs], norm=True)[0]
        return [kwargs]

    def point_masses(self, rng: np.random.Generator, class_name: str) -> tuple[dict | None, dict]:
        """Substructure of a class: point masses (or None) and their summary parameters."""
        summary = {
            "n_subhalo": 0,
            "m_subhalo_total": 0.0,
            "m_subhalo_max": 0.0,
            "axion_mass": math.nan,
            "vortex_angle": math.nan,
            "vortex_half_length": math.nan,
        }
        if class_name == "cdm":
            masses = physics.sample_cdm_subhalos(rng, self.preset.cdm)
        elif class_name == "axion":
            masses = physics.sample_vortex(rng, self.preset.vortex)
            summary.update(
                axion_mass=masses["axion_mass"],
                vortex_angle=masses["angle"],
                vortex_half_length=masses["half_length"],
            )
        else:  # "no_sub", and the single regression class "lens"
            return None, summary
        masses["theta_E"] = self._theta_E_unit * np.sqrt(masses["mass"])  # (arcsec)
        summary.update(
            n_subhalo=len(masses["mass"]),
            m_subhalo_total=float(masses["mass"].sum()),
            m_subhalo_max=float(masses["mass"].max()),
        )
        return masses, summary

    def noiseless_image(self, kwargs_lens: list[dict], kwargs_source: list[dict], masses: dict | None = None):
        """PSF-convolved model image (counts/s per pixel), 2-d."""
        alpha_x, alpha_y = self.lens_model.alpha(self._x, self._y, kwargs_lens)
        if masses is not None:
            sub_x, sub_y = physics.point_mass_deflection(
                self._x, self._y, masses["theta_E"], masses["center_x"], masses["center_y"]
            )
            alpha_x = alpha_x + sub_x
            alpha_y = alpha_y + sub_y
        flux = self.source_model.surface_brightness(self._x - alpha_x, self._y - alpha_y, kwargs_source)
        return self._convolve(flux)

    # -- one image

    def render(self, rng: np.random.Generator, class_name: str) -> tuple[np.ndarray, dict]:
        """One noisy image (float32, H×W) and its physical parameters."""
        lens = physics.sample_macro_lens(rng, self.preset, self.theta_E_halo, from_priors=self.vary_lens)
        source = physics.sample_source(rng, self.preset)
        masses, substructure = self.point_masses(rng, class_name)
        kwargs_source = self.source_kwargs(source)
        model = self.noiseless_image(self.lens_kwargs(lens), kwargs_source, masses)
        image, noise_params = self._noise(rng, model)
        params = {**lens, **source, "src_amp": kwargs_source[0]["amp"], **substructure, **noise_params}
        return image.astype(np.float32), params


# --------------------------------------------------------------------------- workers

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


def _plan_rows(config: SimulationConfig, preset: Preset) -> tuple[list[tuple], list[str], list[int]]:
    """Rows ordered train, val, test; classes cycle within a split, so every split is balanced.

    Split of n images over K classes: class k gets n // K images, and the first n % K classes
    one more (row j of a split has class j % K).
    """
    tasks, splits, labels = [], [], []
    sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
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


def _render_all(config, preset, tasks, images_out, workers: int, progress: bool) -> list[dict]:
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


# --------------------------------------------------------------------------- dataset dir


def _software_versions() -> dict:
    import lenstronomy

    import dlfm

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "lenstronomy": lenstronomy.__version__,
        "dlfm": dlfm.__version__,
    }


def _write_dataset(config: SimulationConfig, target: Path, workers: int, progress: bool) -> None:
    """Simulate every image into ``target`` (an empty directory) and write the manifest."""
    from dlfm.data.dataset import dataset_digest, sha256_file

    preset = PRESETS[config.preset]
    tasks, splits, labels = _plan_rows(config, preset)
    size = preset.image_size
    images = np.lib.format.open_memmap(
        target / "images.npy", mode="w+", dtype=np.float32, shape=(len(tasks), 1, size, size)
    )
    params = _render_all(config, preset, tasks, images, workers, progress)
    if not np.isfinite(images).all():  # a renderer bug, not a user error
        raise RuntimeError("simulation produced non-finite pixels")
    images.flush()
    del images

    np.save(target / "labels.npy", np.asarray(labels, dtype=np.int64))
    table = pd.DataFrame(params)
    table.insert(0, "split", splits)
    table.insert(1, "label", labels)
    table.insert(2, "class_name", [preset.class_names[k] for k in labels])
    table = table[list(PARAM_COLUMNS)]
    table.to_csv(target / "params.csv", index=False)

    files = {name: sha256_file(target / name) for name in ("images.npy", "labels.npy", "params.csv")}
    sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    class_counts = {
        split: {name: int(((table["split"] == split) & (table["class_name"] == name)).sum()) for name in preset.class_names}
        for split in SPLITS
    }
    theta_E_halo = float(physics.einstein_radius(preset.lens.halo_mass, preset.cosmology))
    manifest = {
        "format": "dlfm-dataset",
        "format_version": 1,
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
        "files": files,
        "digest": dataset_digest(files),
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=_json_default) + "\n")


def simulate_dataset(
    config: SimulationConfig,
    out_dir="data",
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Simulate ``config`` into out_dir/<preset>-<digest[:10]>/ and return that directory.

    An existing directory that verifies is reused without work; one that fails verification
    raises DatasetError unless ``force``. The dataset is built in a temporary directory beside
    the target and renamed into place, so a crash never leaves half a dataset.
    ``workers`` (default: all cores) forked processes render chunks of images; it is capped at
    one per 16 images, and the files are byte-identical for any value.
    """
    from dlfm.data.dataset import REBUILD_HINT, verify_dataset_dir

    config.validate()
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}; pass e.g. -P workers=2")
    total = config.n_train + config.n_val + config.n_test
    workers = int(min(workers, max(1, total // 16)))  # tiny datasets are not worth a pool

    out_dir = Path(out_dir)
    target = dataset_path(config, out_dir)
    if target.exists() and not force:
        try:
            manifest = verify_dataset_dir(target)
        except DatasetError as error:
            raise DatasetError(f"dataset cache {target} is corrupt ({_reason(error)}); {REBUILD_HINT}") from None
        if manifest.get("config_digest") != config.digest():
            raise DatasetError(
                f"dataset cache {target} was made from other settings (config digest differs); "
                f"{REBUILD_HINT}"
            )
        return target

    if target.exists():
        check_dataset_owned(target)  # before simulating: force never deletes the user's files
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=out_dir))
    except OSError as error:
        raise DatasetError(
            f"cannot write datasets to {out_dir} ({error.strerror or error}); pass a writable --out-dir"
        ) from None
    try:
        _write_dataset(config, scratch, workers, progress)
        if target.exists():  # force: swap the old copy out, then remove only the files dlfm writes
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=out_dir))
            os.replace(target, old / "dataset")
            os.replace(scratch, target)
            remove_owned_tree(old / "dataset", _dataset_files())
            old.rmdir()
        else:
            try:
                os.replace(scratch, target)
            except OSError:
                if not target.exists():
                    raise
                # Another process finished the same dataset first: keep theirs if it verifies.
                shutil.rmtree(scratch, ignore_errors=True)
                verify_dataset_dir(target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target


def _dataset_files() -> tuple[str, ...]:
    """Every file a dataset directory holds; anything else in one is the user's and stops a rebuild."""
    from dlfm.data.dataset import DATA_FILES
    from dlfm.data.remote import MANIFEST

    return (*DATA_FILES, MANIFEST)


def check_dataset_owned(path: Path) -> None:
    """Refuse (one line) to replace a dataset directory that holds files dlfm did not write."""
    if path.is_symlink() or not path.is_dir():
        raise DatasetError(f"{path} is not a dataset directory dlfm made, so -P force=true will not replace it; "
                           "move it away or pass another out_dir")
    foreign = sorted(p.name for p in path.iterdir() if p.name not in _dataset_files() or p.is_dir() or p.is_symlink())
    if foreign:
        raise DatasetError(f"{path} holds files dlfm did not write ({', '.join(foreign[:3])}), so -P force=true will not "
                           "replace it; move them away or pass another out_dir")


def _reason(error: DatasetError) -> str:
    """The part of a verification error that says what is wrong (before the fix)."""
    text = str(error)
    return text.split("; ")[0]
