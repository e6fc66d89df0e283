"""One pixel scale per encoder (issue 27 item 5): a dataset's images resampled to the grid an encoder reads.

Model I's camera draws 0.05″ pixels, Euclid VIS 0.101″, HST WFC3 0.08″. An encoder pretrained on all three at
their native grids sees the same arc at three sizes in pixels; an encoder with a ``pixel_scale`` (arcsec/px,
recorded in its arch config) reads every image at that one scale instead. Raw flux is resampled before the
per-image min-max normalisation: area-averaged when the pixels grow (what a coarser detector adds up), bilinear
when they shrink. The side becomes ``round(side × native / pixel_scale)``, so the field of view is kept.

``pixel_scale=auto`` (the training stages' default) picks the grid from the data: when the images a run reads
come at several pixel scales (``pretrain_multi``: 0.05, 0.101 and 0.08), the coarsest, so no image is
upsampled; on the CPU transfer matrix that is the grid on which the multi-instrument encoder hurts no
instrument (results log, 2026-12-04). Images at one scale keep their grid and the encoder records none, so it
reads any set, scale stated or not, as before. A set that states no scale, or a size the encoder cannot take
at the coarsest grid, keeps the native grids, with a line saying why.

A dataset records its native scale in its manifest: a preset's ``preset_settings.instrument.pixel_scale``, a
multi-instrument corpus's ``pixel_scale_arcsec`` per image set, an imported one's ``pixel_scale_arcsec``
(``dlfm dataset import --pixel-scale``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlfm.errors import ConfigError

CHUNK = 2048  # images resampled at a time: a 150-px float32 chunk is 180 MB


def native_pixel_scale(manifest: dict) -> float | None:
    """The dataset's pixel scale (arcsec/px) as its manifest records it, or None when it does not say."""
    if manifest.get("pixel_scale_arcsec"):
        return float(manifest["pixel_scale_arcsec"])
    scale = manifest.get("preset_settings", {}).get("instrument", {}).get("pixel_scale")
    return float(scale) if scale else None


def resampled_side(side: int, native: float, pixel_scale: float) -> int:
    """Pixels per axis of a ``side``-px image of ``native`` arcsec/px read at ``pixel_scale`` (same field of view)."""
    return max(1, round(side * native / pixel_scale))


def resample_images(images: np.ndarray, side: int) -> np.ndarray:
    """float32 (N, 1, side, side): area-averaged when shrinking, bilinear when growing (chunked; memmaps stay on disk)."""
    import torch

    current = int(images.shape[-1])
    out = np.empty((len(images), images.shape[1], side, side), dtype=np.float32)
    for start in range(0, len(images), CHUNK):
        chunk = torch.from_numpy(np.array(images[start:start + CHUNK], dtype=np.float32))
        if side < current:
            resized = torch.nn.functional.interpolate(chunk, size=(side, side), mode="area")
        else:
            resized = torch.nn.functional.interpolate(chunk, size=(side, side), mode="bilinear", align_corners=False)
        out[start:start + len(chunk)] = resized.numpy()
    return out


def at_pixel_scale(dataset, pixel_scale: float, name: str = "dataset"):
    """``dataset`` with every image at ``pixel_scale`` (arcsec/px); itself when 0 (native grids) or already there.

    A multi-instrument dataset is resampled part by part. ConfigError when the dataset does not record its
    own pixel scale (an imported folder) or is a sharded corpus (streamed, never held).
    """
    from dlfm.data.multi import MultiInstrumentDataset
    from dlfm.data.shards import ShardedDataset

    if not pixel_scale:
        return dataset
    if isinstance(dataset, MultiInstrumentDataset):
        parts = {part_name: at_pixel_scale(part, pixel_scale, f"{name} ({part_name})") for part_name, part in dataset.parts.items()}
        return dataclasses.replace(dataset, parts=parts)
    if isinstance(dataset, ShardedDataset):
        raise ConfigError(f"{name} is a sharded corpus, which streams at its native grid; pixel_scale "
                          f"{pixel_scale} applies to in-memory datasets only: pass pixel_scale=0 or a preset or dataset directory")
    native = native_pixel_scale(dataset.manifest)
    if native is None:
        raise ConfigError(f"{name} {dataset.root or dataset.manifest.get('preset', '')} does not record its pixel scale, "
                          f"so it cannot be read at the encoder's {pixel_scale} arcsec/px; import it with "
                          "`dlfm dataset import … --pixel-scale <arcsec>`, or use an encoder pretrained with pixel_scale=0")
    side = resampled_side(dataset.image_size, native, pixel_scale)
    if side == dataset.image_size:
        return dataset
    manifest = {**dataset.manifest, "image_size": side, "pixel_scale_arcsec": pixel_scale,
                "resampled_from": {"image_size": dataset.image_size, "pixel_scale_arcsec": native}}
    return dataclasses.replace(dataset, images=resample_images(dataset.images, side), manifest=manifest)


def dataset_for_encoder(dataset, encoder, name: str = "dataset"):
    """``dataset`` as ``encoder`` reads it: at the encoder's pixel scale when it has one, every image size checked."""
    dataset = at_pixel_scale(dataset, getattr(encoder, "pixel_scale", 0.0), name)
    for size in dataset.image_sizes:
        encoder.check_image_size(size)
    return dataset


def image_grids(datasets: dict) -> dict[str, tuple[int, float | None]]:
    """{name: (side, native arcsec/px or None)} of every image set in ``datasets`` ({name: dataset}), multi parts apart.

    A sharded corpus states no scale here: it streams at its native grid, so ``auto`` leaves every set native.
    """
    from dlfm.data.multi import MultiInstrumentDataset
    from dlfm.data.shards import ShardedDataset

    grids = {}
    for name, dataset in datasets.items():
        if isinstance(dataset, MultiInstrumentDataset):
            grids.update(image_grids({f"{name} ({part_name})": part for part_name, part in dataset.parts.items()}))
        elif isinstance(dataset, ShardedDataset):
            grids[name] = (dataset.image_size, None)
        else:
            grids[name] = (dataset.image_size, native_pixel_scale(dataset.manifest))
    return grids


def auto_pixel_scale(grids: dict[str, tuple[int, float | None]], encoder) -> tuple[float, str]:
    """pixel_scale=auto for image sets ``grids`` ({name: (side, native arcsec/px or None)}): the scale, and why.

    Several scales: the coarsest, if ``encoder`` takes every side resampled to it; else 0 (native grids). The
    reason is "" when there was nothing to choose (one scale, or none stated), else one line for the run's log.
    """
    scales = {scale for _, scale in grids.values() if scale}
    if len(scales) <= 1:
        return 0.0, ""
    unstated = [name for name, (_, scale) in grids.items() if not scale]
    if unstated:
        return 0.0, (f"pixel_scale=auto: {', '.join(unstated)} states no pixel scale (a sharded corpus, or a set imported "
                     "without --pixel-scale), so every image is read at its native grid; import it with --pixel-scale to "
                     "read all on one grid")
    coarsest = max(scales)
    sides = {name: resampled_side(side, scale, coarsest) for name, (side, scale) in grids.items()}
    for name, side in sides.items():
        try:
            encoder.check_image_size(side)
        except ConfigError as error:
            return 0.0, (f"pixel_scale=auto: at the coarsest grid, {coarsest:g} arcsec/px, {name} would be {side} px "
                         f"({str(error).split(';')[0]}), so every image is read at its native grid; pass "
                         "pixel_scale=<arcsec> for a grid the encoder takes")
    listed = ", ".join(f"{name} {scale:g}" for name, (_, scale) in grids.items())
    return coarsest, f"pixel_scale=auto: every image on the coarsest grid, {coarsest:g} arcsec/px (native: {listed})"


def describe_grid(dataset) -> str:
    """The grid a dataset's images are on, in words: '74 px at 0.101 arcsec/px (resampled from 150 px at 0.05)'."""
    from dlfm.data.multi import MultiInstrumentDataset

    if isinstance(dataset, MultiInstrumentDataset):
        return "; ".join(f"{name}: {describe_grid(part)}" for name, part in dataset.parts.items())
    native = native_pixel_scale(dataset.manifest)
    words = f"{dataset.image_size} px" + (f" at {native:g} arcsec/px" if native else "")
    source = dataset.manifest.get("resampled_from")
    if source:
        return words + f" (resampled from {source['image_size']} px at {source['pixel_scale_arcsec']:g})"
    return words + " (native grid)"
