"""Physical components of a lens system: one small, named function per piece.

Angles are in arcsec, masses in M☉, axion masses in eV, position angles in rad.
Every random draw takes an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from dlfm.simulation.presets import AxionVortex, CDMSubhalos, Cosmology, LensPriors, Preset

__all__ = [
    "einstein_radius",
    "point_mass_deflection",
    "point_mass_deflection_numpy",
    "sample_cdm_subhalos",
    "sample_vortex",
    "sample_macro_lens",
    "sample_source",
    "ellipticity_to_q_phi",
    "shear_to_gamma_psi",
    "POINT_MASS_R_MIN",
]

# lenstronomy's POINT_MASS floors the radius at 1e-25 (arcsec); we use the same, so the
# vectorised deflection matches it everywhere.
POINT_MASS_R_MIN = 1e-25  # (arcsec)
_BLOCK_ELEMENTS = 1 << 14  # masses × pixels per block of point_mass_deflection


@functools.lru_cache(maxsize=8)
def _theta_E_per_sqrt_msun(cosmology: Cosmology) -> float:
    """Einstein radius of a 1 M☉ point mass (arcsec); θE scales as sqrt(M)."""
    # astropy is slow to import; only the parent process needs it.
    from astropy import constants, units
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=cosmology.H0, Om0=cosmology.Om0, Ob0=cosmology.Ob0)
    d_l = cosmo.angular_diameter_distance(cosmology.z_lens)
    d_s = cosmo.angular_diameter_distance(cosmology.z_source)
    d_ls = cosmo.angular_diameter_distance(cosmology.z_lens, cosmology.z_source)
    # θE = sqrt(4 G M / c² · D_ls / (D_l D_s)) (rad), angular-diameter distances.
    theta_sq = 4 * constants.G * constants.M_sun / constants.c**2 * d_ls / (d_l * d_s)
    theta_rad = np.sqrt(theta_sq.to(units.dimensionless_unscaled).value)
    return float(theta_rad * (180.0 / math.pi) * 3600.0)


def einstein_radius(mass, cosmology: Cosmology = Cosmology()):
    """Einstein radius (arcsec) of a point mass or SIS-equivalent halo of ``mass`` (M☉).

    About 1.66 arcsec for 1e12 M☉ at z_l = 0.5, z_s = 1.0 (DeepLenseSim used luminosity
    distances, ≈1.28 arcsec).
    """
    return _theta_E_per_sqrt_msun(cosmology) * np.sqrt(mass)


def point_mass_deflection(x, y, theta_E, center_x, center_y, fused: bool = True):
    """Summed deflection (arcsec) of many point masses at the points (x, y).

    α = Σ_i θE_i² (x − x_i) / r_i², the same as lenstronomy ``POINT_MASS`` summed over i.
    x, y: 1-d coordinates (arcsec); theta_E, center_x, center_y: 1-d per mass (arcsec).
    ``fused`` uses a numba loop (numba ships with lenstronomy) that never builds the
    masses × pixels temporaries: 3-5x faster than the numpy step.
    """
    x = np.ascontiguousarray(x, dtype=float).ravel()
    y = np.ascontiguousarray(y, dtype=float).ravel()
    theta_E = np.ascontiguousarray(theta_E, dtype=float).ravel()
    center_x = np.ascontiguousarray(center_x, dtype=float).ravel()
    center_y = np.ascontiguousarray(center_y, dtype=float).ravel()
    kernel = _fused_kernel() if fused else None
    if kernel is None:
        return point_mass_deflection_numpy(x, y, theta_E, center_x, center_y)
    return kernel(x, y, theta_E, center_x, center_y, POINT_MASS_R_MIN**2)


def point_mass_deflection_numpy(x, y, theta_E, center_x, center_y):
    """``point_mass_deflection`` as one vectorised numpy step (over blocks of pixels)."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    theta_E_sq = (np.asarray(theta_E, dtype=float) ** 2)[:, None]  # (arcsec²)
    center_x = np.asarray(center_x, dtype=float)[:, None]
    center_y = np.asarray(center_y, dtype=float)[:, None]
    alpha_x = np.empty_like(x)
    alpha_y = np.empty_like(y)
    # Blocks of pixels keep the (masses × pixels) temporaries in cache (~128 kB): 4-5x faster
    # than one full-size step, whose multi-MB temporaries cost a page fault per 4 kB.
    block = max(128, _BLOCK_ELEMENTS // max(1, len(center_x)))
    for start in range(0, len(x), block):
        stop = start + block
        dx = x[None, start:stop] - center_x
        dy = y[None, start:stop] - center_y
        weight = dx * dx
        weight += dy * dy
        np.maximum(weight, POINT_MASS_R_MIN**2, out=weight)
        np.divide(theta_E_sq, weight, out=weight)  # θE² / r²
        dx *= weight
        dy *= weight
        alpha_x[start:stop] = dx.sum(axis=0)
        alpha_y[start:stop] = dy.sum(axis=0)
    return alpha_x, alpha_y


def _point_mass_loop(x, y, theta_E, center_x, center_y, r_min_sq):
    # Masses outer, pixels inner: the inner loop has no cross-iteration dependency, so LLVM
    # vectorises it (with error_model="numpy"), and each pixel still sums masses in order i.
    n_pix = x.shape[0]
    alpha_x = np.zeros(n_pix)
    alpha_y = np.zeros(n_pix)
    for i in range(center_x.shape[0]):
        theta_E_sq = theta_E[i] * theta_E[i]
        cx = center_x[i]
        cy = center_y[i]
        for j in range(n_pix):
            dx = x[j] - cx
            dy = y[j] - cy
            r_sq = dx * dx + dy * dy
            r_sq = r_sq if r_sq > r_min_sq else r_min_sq
            weight = theta_E_sq / r_sq
            alpha_x[j] += weight * dx
            alpha_y[j] += weight * dy
    return alpha_x, alpha_y


@functools.lru_cache(maxsize=1)
def _fused_kernel():
    """The numba-compiled loop (compiled once per process, ~1 s), or None without numba."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a lenstronomy dependency
        return None
    return numba.njit(cache=False, nogil=True, error_model="numpy")(_point_mass_loop)


def sample_cdm_subhalos(rng: np.random.Generator, cdm: CDMSubhalos) -> dict:
    """Draw point-mass subhalos: masses (M☉) from dN/dm ∝ m^slope, positions (arcsec)."""
    # Inverse-CDF sampling of a power law (DeepLenseSim draw_old_cdm_sub_masses).
    power = cdm.mass_slope + 1.0
    u = rng.uniform(0.0, 1.0, size=cdm.n_subhalo)
    low, high = cdm.m_min**power, cdm.m_max**power
    masses = (low + (high - low) * u) ** (1.0 / power)  # (M☉)
    radius = rng.uniform(*cdm.r_range, size=cdm.n_subhalo)  # (arcsec)
    angle = rng.uniform(0.0, 2 * math.pi, size=cdm.n_subhalo)  # (rad)
    return {
        "mass": masses,
        "radius": radius,
        "center_x": radius * np.cos(angle),
        "center_y": radius * np.sin(angle),
    }


def sample_vortex(rng: np.random.Generator, vortex: AxionVortex) -> dict:
    """Draw an axion vortex: equal point masses (M☉) on a line through the centre."""
    log_lo, log_hi = vortex.log10_axion_mass_range
    axion_mass = 10.0 ** rng.uniform(log_lo, log_hi)  # (eV)
    half_length = vortex.length_coefficient / axion_mass  # (arcsec)
    angle = rng.uniform(0.0, 2 * math.pi)  # (rad)
    along = np.linspace(-half_length, half_length, vortex.n_masses)  # (arcsec)
    return {
        "mass": np.full(vortex.n_masses, vortex.total_mass / vortex.n_masses),
        "center_x": along * math.cos(angle),
        "center_y": along * math.sin(angle),
        "axion_mass": axion_mass,
        "angle": angle,
        "half_length": half_length,
    }


def ellipticity_to_q_phi(e1: float, e2: float) -> tuple[float, float]:
    """SIE (e1, e2) -> axis ratio q and position angle φ in [0, π) (rad)."""
    from lenstronomy.Util import param_util

    phi, q = param_util.ellipticity2phi_q(e1, e2)
    return float(q), float(np.mod(phi, math.pi))


def shear_to_gamma_psi(gamma1: float, gamma2: float) -> tuple[float, float]:
    """External shear (γ1, γ2) -> strength γ and angle ψ in [0, π) (rad)."""
    from lenstronomy.Util import param_util

    psi, gamma = param_util.shear_cartesian2polar(gamma1, gamma2)
    return float(gamma), float(np.mod(psi, math.pi))


def sample_macro_lens(
    rng: np.random.Generator, preset: Preset, theta_E_fixed: float, from_priors: bool
) -> dict:
    """SIE + shear parameters: the preset's fixed lens, or a draw from its priors.

    Priors sample q, φ, γ, ψ and convert to e1, e2, γ1, γ2 with lenstronomy param_util.
    """
    from lenstronomy.Util import param_util

    lens = preset.lens
    if from_priors:
        priors: LensPriors = preset.lens_priors
        theta_E = rng.uniform(*priors.theta_E)  # (arcsec)
        q = rng.uniform(*priors.q)
        phi = rng.uniform(*priors.phi)  # (rad)
        gamma_ext = rng.uniform(*priors.gamma_ext)
        psi_ext = rng.uniform(*priors.psi_ext)  # (rad)
        e1, e2 = param_util.phi_q2_ellipticity(phi, q)
        gamma1, gamma2 = param_util.shear_polar2cartesian(psi_ext, gamma_ext)
    else:
        theta_E = theta_E_fixed
        e1, e2, gamma1, gamma2 = lens.e1, lens.e2, lens.gamma1, lens.gamma2
        q, phi = ellipticity_to_q_phi(e1, e2)
        gamma_ext, psi_ext = shear_to_gamma_psi(gamma1, gamma2)
    return {
        "theta_E": float(theta_E),
        "e1": float(e1),
        "e2": float(e2),
        "gamma1": float(gamma1),
        "gamma2": float(gamma2),
        "q": float(q),
        "phi": float(phi),
        "gamma_ext": float(gamma_ext),
        "psi_ext": float(psi_ext),
        "lens_x": lens.center_x,
        "lens_y": lens.center_y,
    }


def sample_source(rng: np.random.Generator, preset: Preset) -> dict:
    """Sérsic source parameters: fixed shape with a random centre, or a draw from the priors."""
    priors = preset.source_priors
    if priors is not None:
        src_x, src_y = rng.uniform(*priors.center_range, size=2)  # (arcsec)
        return {
            "src_x": float(src_x),
            "src_y": float(src_y),
            "src_R": float(rng.uniform(*priors.R_sersic)),  # (arcsec)
            "src_n": float(rng.uniform(*priors.n_sersic)),
            "src_e1": priors.e1,
            "src_e2": priors.e2,
            "src_mag": float(rng.uniform(*priors.magnitude)),  # (mag)
            "src_amp": math.nan,
        }
    source = preset.source
    src_x, src_y = rng.uniform(*source.center_range, size=2)  # (arcsec)
    return {
        "src_x": float(src_x),
        "src_y": float(src_y),
        "src_R": source.R_sersic,
        "src_n": source.n_sersic,
        "src_e1": source.e1,
        "src_e2": source.e2,
        "src_mag": math.nan if source.magnitude is None else source.magnitude,
        "src_amp": math.nan if source.amp is None else source.amp,
    }
