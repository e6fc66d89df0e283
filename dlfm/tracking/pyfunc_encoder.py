"""pyfunc loader for registered encoders: ``_load_pyfunc(data_path)`` → an embedding model.

Registered versions are logged with ``loader_module="dlfm.tracking.pyfunc_encoder"``, the encoder
directory as ``data_path`` and the ``dlfm`` package as ``code_paths``, so ``mlflow models serve``
needs no dlfm install. Loading reads the weights with ``torch.load(weights_only=True)``: nothing
pickled is ever unpickled from the registry.
"""

from __future__ import annotations

import numpy as np
import torch

INPUT_DESCRIPTION = ("images: float32 array (N, 1, S, S) of raw simulated flux (or already min-max normalised images), "
                     "S any size the encoder takes (trained at {size} px; e.g. 150 px Model I or 64 px Model II/III); "
                     "each image is min-max normalised to [0, 1] here, as in training; the inference param pixel_scale "
                     "(arcsec/px of the images, default 0 = already on the encoder's grid) resamples them to the grid of "
                     "an encoder pretrained at a pixel_scale")
PIXEL_SCALE_PARAM = "pixel_scale"  # predict(images, params={"pixel_scale": 0.05}): the images' arcsec per pixel


class EncoderPredictor:
    """predict(images (N,1,H,W) float32 raw flux or normalised) → embeddings (N, embed_dim).

    The model owns its preprocessing: each image is min-max normalised as the training loaders
    do, and min-max is idempotent, so an already normalised batch gives the same embeddings.
    """

    def __init__(self, encoder, image_size: int):
        self.encoder = encoder.eval()
        self.image_size = image_size

    def check_shape(self, images: np.ndarray) -> np.ndarray:
        """(N,1,S,S) float32, or one short error naming the shape (never the values)."""
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
            raise refusal(f"dlfm-encoder expects square images shaped (N, 1, S, S) (trained at S = {self.image_size}); "
                          f"got shape {tuple(images.shape)}")
        return images

    def check_size(self, images: np.ndarray, given: tuple) -> None:
        """S any size the encoder takes, or one short error naming the shape it was given.

        The encoder pools globally, so one version embeds every instrument at its native size (issue 22);
        ``Encoder.check_image_size`` says which sizes it cannot take (too small; a ViT: no whole number of tokens).
        """
        from dlfm.errors import ConfigError

        try:
            self.encoder.check_image_size(int(images.shape[-1]))
        except ConfigError as error:
            reason = str(error).split("; ")[0]  # the reason; the fix names training params, not a serving client's
            resampled = f" (resampled to {images.shape[-1]} px)" if tuple(images.shape) != given else ""
            raise refusal(f"dlfm-encoder cannot embed images of shape {given}{resampled}: {reason}") from None

    def on_encoder_grid(self, images: np.ndarray, pixel_scale: float) -> np.ndarray:
        """Normalised ``images`` of ``pixel_scale`` arcsec/px on the grid of an encoder pretrained at a pixel_scale
        (arch.json), resampled as evaluate resamples a dataset; as they are when either scale is 0 (native grids)."""
        from dlfm.data.resample import resample_images, resampled_side

        target = float(getattr(self.encoder, "pixel_scale", 0.0) or 0.0)
        if not pixel_scale or not target or pixel_scale == target:
            return images
        return resample_images(images, resampled_side(int(images.shape[-1]), pixel_scale, target))

    @torch.no_grad()
    def predict(self, model_input, params=None):
        from dlfm.data.dataset import normalize_images

        if isinstance(model_input, dict):  # a named tensor signature delivers {"images": array}
            model_input = model_input.get("images", next(iter(model_input.values())))
        images = self.check_shape(np.asarray(model_input, dtype=np.float32))
        pixel_scale = float((params or {}).get(PIXEL_SCALE_PARAM) or 0.0)
        if pixel_scale < 0:
            raise refusal(f"params {PIXEL_SCALE_PARAM}={pixel_scale} is negative; pass the images' arcsec per pixel, "
                          "or 0 for images already on the encoder's grid")
        grid = self.on_encoder_grid(normalize_images(images), pixel_scale)
        self.check_size(grid, tuple(images.shape))
        return self.encoder(torch.from_numpy(np.ascontiguousarray(grid))).numpy()


def refusal(message: str):
    """The serving error of a bad request: one line, MLflow's invalid-parameter code (HTTP 400 under `mlflow models serve`)."""
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _load_pyfunc(data_path: str, model_config=None) -> EncoderPredictor:
    from dlfm.models.serialization import load_encoder, read_arch

    return EncoderPredictor(load_encoder(data_path), int(read_arch(data_path)["image_size"]))


def example_images(image_size: int, n: int = 2) -> np.ndarray:
    """A small raw-flux input example: a ring of light (an Einstein ring, counts) on a faint sky."""
    axis = np.linspace(-1.0, 1.0, image_size, dtype=np.float32)
    radius = np.hypot(*np.meshgrid(axis, axis))
    ring = 50.0 * np.exp(-((radius - 0.5) / 0.08) ** 2) + 2.0
    return np.stack([ring[None] * (1 + k) for k in range(n)]).astype(np.float32)
