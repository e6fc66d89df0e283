"""Render one lensing image with lenstronomy: ``LensRenderer`` (built once per process) and the noise models.

Speed: lenstronomy builds a model by looping over profiles in Python, so each worker builds
its models once (SIE + SHEAR lens, Sérsic source, pixel grid, PSF convolution) and per
image only the keyword arguments change. Point masses (subhalos, vortex) are not lenstronomy
profiles here: their deflections are summed in one numpy step and added to the macro-lens
deflection before ray shooting (``physics.point_mass_deflection``, checked against
lenstronomy ``POINT_MASS`` in the tests).
"""

from __future__ import annotations

import math

import numpy as np

import dlfm.simulation.physics as physics
from dlfm.simulation.presets import Preset


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


NOISE_MODELS = {"ccd": _CCDNoise, "background_poisson": _BackgroundPoissonNoise}  # Instrument.noise_model -> its noise
"""Each noise model built from a preset: ``NOISE_MODELS[name](preset)(rng, flux) -> (noisy flux, params)``."""


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
        self.vary_lens = bool(vary_lens) or preset.task == "regression" or preset.lens_from_priors
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
        else:
            raise ValueError(f"unknown noise model {instrument.noise_model!r}")
        self._noise = NOISE_MODELS[instrument.noise_model](preset)
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
