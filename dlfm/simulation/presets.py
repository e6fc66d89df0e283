"""Simulation presets: the numbers of the DeepLense datasets, one frozen dataclass each.

Every number comes from DeepLenseSim (``deeplense/lens.py``, ``Model_*/sim_*.py``) or from
DESIGN.md ("Simulation (lenstronomy)"), with its unit beside it. The whole preset is written
into each dataset's manifest, so a dataset says exactly how it was made.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = [
    "Cosmology",
    "Instrument",
    "MacroLens",
    "LensPriors",
    "Source",
    "SourcePriors",
    "CDMSubhalos",
    "AxionVortex",
    "Preset",
    "PRESETS",
    "DEFAULT_PRESET",
    "CLASSIFICATION_CLASSES",
]


@dataclass(frozen=True)
class Cosmology:
    """Flat ΛCDM and the lens/source redshifts shared by every preset (DeepLenseSim ``DeepLens``)."""

    H0: float = 70.0  # Hubble constant (km/s/Mpc)
    Om0: float = 0.3  # matter density today
    Ob0: float = 0.05  # baryon density today
    z_lens: float = 0.5  # main halo and all subhalos
    z_source: float = 1.0  # the lensed Sérsic galaxy


@dataclass(frozen=True)
class Instrument:
    """Pixel grid, PSF and noise of one camera.

    ``noise_model`` picks the noise: ``"ccd"`` uses lenstronomy ``SingleBand`` (sky + read-out
    Gaussian noise and Gaussian-approximated Poisson noise, Euclid VIS); ``"background_poisson"``
    is DeepLenseSim's Model I recipe (a Gaussian background of fixed rms plus a Poisson draw at a
    random exposure time).
    """

    name: str
    num_pix: int  # pixels per image axis
    pixel_scale: float  # (arcsec/pixel)
    psf_fwhm: float  # Gaussian PSF full width at half maximum (arcsec)
    psf_truncation: float  # PSF kernel truncated at this many sigma
    noise_model: str  # "ccd" | "background_poisson"
    # --- "ccd" (lenstronomy SingleBand kwargs) ---
    magnitude_zero_point: float | None = None  # magnitude that gives 1 e-/s (mag)
    exposure_time: float | None = None  # per exposure (s)
    num_exposures: int = 1  # co-added exposures
    sky_brightness: float | None = None  # (mag/arcsec²)
    read_noise: float | None = None  # per exposure (e-)
    ccd_gain: float | None = None  # (e-/ADU)
    # --- "background_poisson" ---
    background_rms: float | None = None  # Gaussian background per pixel (counts/s)
    log10_exposure_time_range: tuple[float, float] | None = None  # exposure 10^U(lo, hi) (s)

    def kwargs_single_band(self) -> dict:
        """lenstronomy ``SingleBand`` / ``SimAPI`` keyword arguments, every value explicit."""
        if self.noise_model != "ccd":
            raise ValueError(f"instrument {self.name} has no SingleBand description")
        return {
            "pixel_scale": self.pixel_scale,
            "exposure_time": self.exposure_time,
            "magnitude_zero_point": self.magnitude_zero_point,
            "read_noise": self.read_noise,
            "ccd_gain": self.ccd_gain,
            "sky_brightness": self.sky_brightness,
            "seeing": self.psf_fwhm,
            "num_exposures": self.num_exposures,
            "psf_type": "GAUSSIAN",
            "truncation": self.psf_truncation,
            "data_count_unit": "e-",
        }


# Euclid VIS with the lenstronomy 1.9.2 values that DeepLenseSim Model II used
# (Euclid(band='VIS', psf_type='GAUSSIAN', coadd_years=6)); lenstronomy 1.14 changed the
# defaults, so every number is passed explicitly.
EUCLID_VIS_64 = Instrument(
    name="euclid_vis",
    num_pix=64,  # (pixels)
    pixel_scale=0.101,  # (arcsec/pixel)
    psf_fwhm=0.16,  # (arcsec)
    psf_truncation=5.0,  # lenstronomy SingleBand default (sigma)
    noise_model="ccd",
    magnitude_zero_point=24.0,  # (mag for 1 e-/s)
    exposure_time=565.0,  # per exposure (s)
    num_exposures=4,
    sky_brightness=22.35,  # (mag/arcsec²)
    read_noise=4.2,  # (e-)
    ccd_gain=3.1,  # (e-/ADU)
)

# DeepLenseSim Model III (``Model_III/sim_*.py``: ``set_instrument('hst')`` then ``simple_sim_2``,
# 64x64 px): "HST observation characteristics as done by default in lenstronomy" (Model_III/README.md).
# Those defaults are lenstronomy's ``HST(band='WFC3_F160W', psf_type='GAUSSIAN')``, identical in
# lenstronomy 1.9.2 (DeepLenseSim's) and 1.14.2 (ours); passed explicitly all the same.
HST_WFC3_F160W_64 = Instrument(
    name="hst_wfc3_f160w",
    num_pix=64,  # (pixels), DeepLenseSim simple_sim_2 numpix
    pixel_scale=0.08,  # (arcsec/pixel), drizzled WFC3/IR
    psf_fwhm=0.08,  # (arcsec), lenstronomy: "set equal to the approx pixel size for drizzled PSF"
    psf_truncation=5.0,  # lenstronomy SingleBand default (sigma)
    noise_model="ccd",
    magnitude_zero_point=25.96,  # (mag for 1 e-/s)
    exposure_time=5400.0,  # about two HST orbits (s)
    num_exposures=1,
    sky_brightness=22.3,  # (mag/arcsec²)
    read_noise=4.0,  # (e-)
    ccd_gain=2.5,  # (e-/ADU)
)

# DeepLenseSim Model I, ``DeepLens.simple_sim``.
MODEL_I_CAMERA = Instrument(
    name="model_i_camera",
    num_pix=150,  # (pixels)
    pixel_scale=0.05,  # (arcsec/pixel)
    psf_fwhm=0.087,  # (arcsec)
    psf_truncation=3.0,  # (sigma), as simple_sim
    noise_model="background_poisson",
    background_rms=0.01,  # (counts/s per pixel)
    log10_exposure_time_range=(3.0, 3.5),  # exposure 10^U(3, 3.5) (s)
)


@dataclass(frozen=True)
class MacroLens:
    """Fixed main lens of the classification presets: SIE + external shear, centred."""

    halo_mass: float = 1e12  # main halo (M☉); θE follows from the cosmology
    e1: float = 0.1  # SIE ellipticity component
    e2: float = 0.0
    gamma1: float = 0.05  # external shear component
    gamma2: float = 0.0
    center_x: float = 0.0  # (arcsec)
    center_y: float = 0.0  # (arcsec)


@dataclass(frozen=True)
class LensPriors:
    """Macro-lens priors (regression preset, and ``vary_lens`` for classification)."""

    theta_E: tuple[float, float] = (0.8, 1.6)  # Einstein radius U(lo, hi) (arcsec)
    q: tuple[float, float] = (0.5, 1.0)  # SIE axis ratio U(lo, hi)
    phi: tuple[float, float] = (0.0, math.pi)  # SIE position angle U(lo, hi) (rad)
    gamma_ext: tuple[float, float] = (0.0, 0.1)  # external shear strength U(lo, hi)
    psi_ext: tuple[float, float] = (0.0, math.pi)  # external shear angle U(lo, hi) (rad)


@dataclass(frozen=True)
class Source:
    """Sérsic source of the classification presets (DeepLenseSim ``make_source_light[_mag]``)."""

    R_sersic: float = 0.25  # half-light radius (arcsec)
    n_sersic: float = 1.0
    e1: float = -0.1
    e2: float = 0.1
    center_range: tuple[float, float] = (-0.35, 0.35)  # centre U(lo, hi) per axis (arcsec)
    magnitude: float | None = 20.0  # apparent magnitude (mag); None -> use ``amp``
    amp: float | None = None  # lenstronomy amplitude (counts/s/arcsec² at R_sersic)


@dataclass(frozen=True)
class SourcePriors:
    """Sérsic source priors of the regression preset."""

    R_sersic: tuple[float, float] = (0.15, 0.4)  # U(lo, hi) (arcsec)
    n_sersic: tuple[float, float] = (0.7, 3.0)  # U(lo, hi)
    magnitude: tuple[float, float] = (19.0, 21.0)  # U(lo, hi) (mag)
    center_range: tuple[float, float] = (-0.35, 0.35)  # centre U(lo, hi) per axis (arcsec)
    e1: float = -0.1  # fixed, as the classification source
    e2: float = 0.1


@dataclass(frozen=True)
class CDMSubhalos:
    """Point-mass subhalos (DeepLenseSim ``make_old_cdm``)."""

    n_subhalo: int = 25  # subhalos per image
    m_min: float = 1e6  # (M☉)
    m_max: float = 1e10  # (M☉)
    mass_slope: float = -0.9  # dN/dm ∝ m^mass_slope
    r_range: tuple[float, float] = (0.25, 2.0)  # radius U(lo, hi) (arcsec)


@dataclass(frozen=True)
class AxionVortex:
    """A line of equal point masses (DeepLenseSim ``make_vortex``)."""

    n_masses: int = 100  # point masses on the line
    total_mass: float = 3e10  # (M☉)
    log10_axion_mass_range: tuple[float, float] = (-24.0, -22.0)  # m = 10^U(lo, hi) (eV)
    # half-length L = length_coefficient / m (arcsec), DeepLenseSim axion_mass_to_length:
    # 0.06 / (2 m) * 1e-22 = 3e-24 / m, valid for a halo at z = 0.5.
    length_coefficient: float = 3e-24  # (arcsec · eV)


CLASSIFICATION_CLASSES = ("no_sub", "cdm", "axion")


@dataclass(frozen=True)
class Preset:
    """Everything that defines a simulated dataset except the sizes and the seed."""

    name: str
    task: str  # "classification" | "regression"
    class_names: tuple[str, ...]
    instrument: Instrument
    description: str = ""
    cosmology: Cosmology = Cosmology()
    lens: MacroLens = MacroLens()
    lens_priors: LensPriors = LensPriors()  # regression always; classification with vary_lens
    source: Source = Source()
    source_priors: SourcePriors | None = None  # set: draw the source from priors (regression, pretrain)
    lens_from_priors: bool = False  # always draw the macro lens from lens_priors (as vary_lens does for one dataset)
    cdm: CDMSubhalos = CDMSubhalos()
    vortex: AxionVortex = AxionVortex()

    @property
    def image_size(self) -> int:
        """Pixels per image axis."""
        return self.instrument.num_pix

    def to_dict(self) -> dict:
        """All the numbers, JSON-ready (tuples become lists)."""
        return dataclasses.asdict(self)


PRESETS: dict[str, Preset] = {
    "model_ii": Preset(
        name="model_ii",
        task="classification",
        class_names=CLASSIFICATION_CLASSES,
        instrument=EUCLID_VIS_64,
        description="DeepLense Model II: Euclid VIS, 64x64 at 0.101 arcsec/pixel, source magnitude 20",
    ),
    "model_i": Preset(
        name="model_i",
        task="classification",
        class_names=CLASSIFICATION_CLASSES,
        instrument=MODEL_I_CAMERA,
        description="DeepLense Model I: 150x150 at 0.05 arcsec/pixel, Gaussian background + Poisson noise",
        # Model I sets the source amplitude, not a magnitude (make_source_light: amp = 20).
        source=Source(magnitude=None, amp=20.0),
    ),
    "model_iii": Preset(
        name="model_iii",
        task="classification",
        class_names=CLASSIFICATION_CLASSES,
        instrument=HST_WFC3_F160W_64,
        description="DeepLense Model III: HST WFC3 F160W, 64x64 at 0.08 arcsec/pixel, source magnitude 20",
    ),
    "regression": Preset(
        name="regression",
        task="regression",
        class_names=("lens",),
        instrument=EUCLID_VIS_64,
        description="Lens-parameter regression: model_ii instrument, lens and source drawn from priors, no substructure",
        source_priors=SourcePriors(),
    ),
    # Self-supervised pretraining corpus (issue 12): every class, with the macro lens and the source
    # from the regression priors, so pretraining sees the θE, ellipticity and shear that transfer asks
    # for. Labels and parameters are still stored, for probes and plots; the self-supervised
    # objectives never read them. Simulate it with other seeds than the evaluation sets.
    "pretrain": Preset(
        name="pretrain",
        task="classification",
        class_names=CLASSIFICATION_CLASSES,
        instrument=EUCLID_VIS_64,
        description="Pretraining corpus: model_ii instrument and classes mixed, lens and source drawn from the regression priors",
        source_priors=SourcePriors(),
        lens_from_priors=True,
    ),
    # The other instruments of the multi-instrument corpus `pretrain_multi` (issue 22, dlfm/simulation/multi.py):
    # the pretrain corpus seen through Model III's HST camera and Model I's, each at its native size.
    "pretrain_model_iii": Preset(
        name="pretrain_model_iii",
        task="classification",
        class_names=CLASSIFICATION_CLASSES,
        instrument=HST_WFC3_F160W_64,
        description="Pretraining corpus through Model III's HST WFC3 F160W (64x64 at 0.08 arcsec/pixel), lens and "
                    "source drawn from the regression priors",
        source_priors=SourcePriors(),
        lens_from_priors=True,
    ),
    "pretrain_model_i": Preset(
        name="pretrain_model_i",
        task="classification",
        class_names=CLASSIFICATION_CLASSES,
        instrument=MODEL_I_CAMERA,
        description="Pretraining corpus through Model I's camera (150x150 at 0.05 arcsec/pixel), lens drawn from the "
                    "regression priors; the source keeps Model I's amplitude (the camera has no magnitude zero point)",
        source=Source(magnitude=None, amp=20.0),
        lens_from_priors=True,
    ),
    # Anomalies for `-e anomaly`: Model II images with one thing the classes never showed.
    "anomaly_long_vortex": Preset(
        name="anomaly_long_vortex",
        task="classification",
        class_names=("axion",),
        instrument=EUCLID_VIS_64,
        description="Anomaly: model_ii with axion vortices of half-length 3-7.5 arcsec (m = 10^U(-24.4, -24) eV), "
                    "longer than any axion class line (0.03-3 arcsec)",
        vortex=AxionVortex(log10_axion_mass_range=(-24.4, -24.0)),
    ),
    "anomaly_heavy_subhalos": Preset(
        name="anomaly_heavy_subhalos",
        task="classification",
        class_names=("cdm",),
        instrument=EUCLID_VIS_64,
        description="Anomaly: model_ii with 25 subhalos of 1e10-1e11 Msun, above the cdm class's [1e6, 1e10] Msun prior",
        cdm=CDMSubhalos(m_min=1e10, m_max=1e11),
    ),
    "anomaly_wide_psf": Preset(
        name="anomaly_wide_psf",
        task="classification",
        class_names=CLASSIFICATION_CLASSES,
        instrument=dataclasses.replace(EUCLID_VIS_64, name="euclid_vis_wide_psf", psf_fwhm=0.32),
        description="Anomaly: model_ii's lens and classes seen through a PSF twice as wide (FWHM 0.32 arcsec, not 0.16)",
    ),
}

DEFAULT_PRESET = "model_ii"
