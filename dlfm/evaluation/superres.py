"""Super-resolution data and scores (numpy/torch, no MLflow): the instrument's degradation, bicubic, PSNR/SSIM.

The degradation (DESIGN-style recipe; every quantity in the units the dataset stores):

1. Start from the held-out high-resolution image as simulated: flux in e-/s per pixel on the
   preset's grid (model_ii: 64 × 64 px at 0.101″/px), the preset's noise already in it.
2. Area downsampling by ``SCALE`` = 4 per axis: each low-resolution pixel is the *sum* of its
   4 × 4 high-resolution pixels (e-/s per 0.404″ pixel: flux is conserved, as a detector with
   4× larger pixels would collect it). 64 × 64 → 16 × 16.
3. The preset's own noise model at the lower resolution (``low_res_instrument``): the same
   camera with pixel_scale × 4 and num_pix / 4; exposure time, zero point, sky brightness
   (mag/arcsec²), read noise (e- per exposure) and gain unchanged. For the ``ccd`` model
   (model_ii, model_iii) lenstronomy ``SingleBand`` then gives the background sigma of the larger
   pixel: sky counts grow with pixel area (× 16), read noise is one read per pixel; shot noise is
   max(f, 0)/T of the summed flux f (e-/s) over the total exposure T (s). For the
   ``background_poisson`` model (model_i) the background rms (counts/s per pixel) is scaled by 4
   (sky-limited: variance ∝ pixel area) and the exposure is drawn as the model draws it.
   The high-resolution noise summed in step 2 stays: the input is the noisy target seen through
   the coarser camera, as super-resolution benchmarks degrade a given high-resolution image.
   For model_ii that is a background sigma of about 0.030 e-/s per 16-px pixel (0.023 summed
   from 64 px, 0.019 drawn afresh) where a real 0.404″ camera would have 0.019.
4. Min-max normalisation of each low-resolution image to [0, 1], as every loader normalises
   (``dlfm.data.dataset.normalize_images``); the target is its 64 × 64 image put through the *same* map:
   the low-resolution flux divided by SCALE² (the mean flux per high-resolution pixel of each block), its
   minimum to 0 and maximum to 1. Input and target are then in one unit, so no head gains a free offset
   and scale that the bicubic baseline lacks (issue 28: with each normalised on its own, one affine map
   fitted on train lifted bicubic by ~5 dB). A target pixel may leave [0, 1] (a peak brighter than its
   block's mean, or noise below the block minimum); nothing is clipped.
5. Bicubic upsampling by 4 back to 64 × 64 (``torch.nn.functional.interpolate``, bicubic,
   a = −0.75, align_corners=False), clipped to [0, 1]. The encoders take their native 64-px input,
   so this bicubic image is what enters the encoder, what the head adds its residual to, and the
   bicubic baseline itself: an untrained head reproduces the baseline exactly.

The noise draws come from ``numpy.random.default_rng([DEGRADE_STREAM, seed, split])``, so the
inputs depend only on (dataset, seed, split): every arm, budget and cell sees the very same inputs.

Scores: PSNR (dB) and SSIM of each test image against its normalised 64-px target, from
scikit-image (``skimage.metrics``, its defaults: 7 × 7 uniform window, K1 = 0.01, K2 = 0.03),
with data_range = 1.0 (the input's range), then the mean over the test images.

Two baselines: bicubic alone, and bicubic followed by the best affine map a·x + b (least squares over
every pixel of the train split: what any head could learn for free). Verdicts compare each head with
the stronger of the two.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from dlfm.errors import ConfigError

SCALE = 4  # high-resolution pixels per low-resolution pixel, per axis (64 px → 16 px)
DEGRADE_STREAM = 0x5125  # seed stream of the low-resolution noise, apart from subsets, heads and encoders
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}  # one noise stream per split
DATA_RANGE = 1.0  # PSNR/SSIM data range: normalised images lie in [0, 1]


def area_downsample(flux: np.ndarray, factor: int = SCALE) -> np.ndarray:
    """(n, C, H, W) flux per pixel → (n, C, H/f, W/f) flux per f×f-times-larger pixel: the sum of each block."""
    n, c, height, width = flux.shape
    if height % factor or width % factor:
        raise ConfigError(f"super-resolution needs images whose side divides by {factor}, got {height}×{width} px; "
                          f"use a 64-px preset such as model_ii")
    blocks = np.asarray(flux, dtype=np.float64).reshape(n, c, height // factor, factor, width // factor, factor)
    return blocks.sum(axis=(3, 5))


LOW_RES_CHANGES = {
    # noise model -> the fields of the instrument with pixels `f` times larger per axis, beyond the grid itself
    "ccd": lambda instrument, f: {},  # SingleBand derives the per-pixel sky from pixel_scale; read noise is per pixel
    "background_poisson": lambda instrument, f: {"background_rms": instrument.background_rms * f},  # rms ∝ √area
}


def low_res_instrument(instrument, factor: int = SCALE):
    """The same camera with ``factor``× larger pixels: pixel_scale × f (arcsec/px), num_pix / f; the noise fields per pixel."""
    return replace(instrument, num_pix=instrument.num_pix // factor, pixel_scale=instrument.pixel_scale * factor,
                   **LOW_RES_CHANGES[instrument.noise_model](instrument, factor))


def degrade(flux: np.ndarray, preset, rng: np.random.Generator, factor: int = SCALE) -> np.ndarray:
    """Low-resolution observations (n, 1, H/f, W/f) in e-/s per pixel: area sum, then the preset's noise at that pixel."""
    from dlfm.simulation.renderer import NOISE_MODELS

    coarse = area_downsample(flux, factor)
    noise = NOISE_MODELS[preset.instrument.noise_model](replace(preset, instrument=low_res_instrument(preset.instrument, factor)))
    return np.stack([noise(rng, image[0])[0][None] for image in coarse]).astype(np.float32)


def bicubic(images: np.ndarray, factor: int = SCALE) -> np.ndarray:
    """Bicubic upsampling by ``factor`` of (n, 1, h, w) images in [0, 1], clipped back to [0, 1]; float32."""
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    up = torch.nn.functional.interpolate(tensor, scale_factor=factor, mode="bicubic", align_corners=False)
    return up.clamp_(0.0, 1.0).numpy()


def degrade_split(flux: np.ndarray, preset, seed: int, split: str) -> np.ndarray:
    """The encoder's input for one split: degraded, normalised per image, bicubic-upsampled (n, 1, H, W) in [0, 1]."""
    return degraded_pair(flux, preset, seed, split)[0]


def degraded_pair(flux: np.ndarray, preset, seed: int, split: str, factor: int = SCALE) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of one split, both float32 (n, 1, H, W) through one map: the low-resolution image's min-max.

    The inputs are the degraded images min-max normalised and bicubic-upsampled (in [0, 1]); the targets are the
    high-resolution fluxes with the same offset and scale (block-mean flux per pixel), so they may leave [0, 1].
    """
    rng = np.random.default_rng([DEGRADE_STREAM, seed, SPLIT_CODES[split]])
    low = degrade(flux, preset, rng, factor).astype(np.float64) / factor**2  # e-/s per high-resolution pixel
    low_min = low.min(axis=(1, 2, 3), keepdims=True)
    span = np.maximum(low.max(axis=(1, 2, 3), keepdims=True) - low_min, 1e-12)
    inputs = bicubic(((low - low_min) / span).astype(np.float32), factor)
    targets = ((np.asarray(flux, dtype=np.float64) - low_min) / span).astype(np.float32)
    return inputs, targets


def fit_affine(inputs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising Σ (a·input + b − target)² over every pixel: the best global affine correction of bicubic."""
    x, y = np.asarray(inputs, dtype=np.float64).ravel(), np.asarray(targets, dtype=np.float64).ravel()
    variance = x.var()
    a = float(((x - x.mean()) * (y - y.mean())).mean() / variance) if variance > 0 else 0.0
    return a, float(y.mean() - a * x.mean())


def baselines(train, test) -> dict[str, float]:
    """The two no-learning baselines' mean test scores: bicubic, and bicubic with the affine map fitted on ``train``."""
    a, b = fit_affine(train.images, train.targets)
    return {**mean_scores(image_scores(test.images, test.targets), "test/bicubic_"),
            **mean_scores(image_scores(a * test.images + b, test.targets), "test/bicubic_affine_")}


def image_scores(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(n, 2) float64: PSNR (dB) and SSIM of each prediction against its target (skimage, data_range 1: the input's)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    return np.array([(peak_signal_noise_ratio(t[0], p[0], data_range=DATA_RANGE),
                      structural_similarity(t[0], p[0], data_range=DATA_RANGE)) for p, t in zip(predictions, targets)])


def mean_scores(scores: np.ndarray, prefix: str = "test/") -> dict[str, float]:
    """{prefix+psnr (dB), prefix+ssim}: means over images of ``image_scores``."""
    return {f"{prefix}psnr": float(scores[:, 0].mean()), f"{prefix}ssim": float(scores[:, 1].mean())}
