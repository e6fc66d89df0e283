"""pyfunc loader for registered encoders: ``_load_pyfunc(data_path)`` → an embedding model.

Registered versions are logged with ``loader_module="dlfm.tracking.pyfunc_encoder"`` and
the encoder directory as ``data_path``. Loading imports this module and reads the weights with
``torch.load(weights_only=True)``: nothing pickled is ever unpickled from the registry.
"""

from __future__ import annotations

import numpy as np
import torch


class EncoderPredictor:
    """predict(images (N,1,H,W) float32, already normalised) → embeddings (N, embed_dim)."""

    def __init__(self, encoder):
        self.encoder = encoder.eval()

    @torch.no_grad()
    def predict(self, model_input, params=None):
        if isinstance(model_input, dict):  # a named tensor signature delivers {"images": array}
            model_input = model_input.get("images", next(iter(model_input.values())))
        images = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        if images.ndim == 3:
            images = images[:, None]
        return self.encoder(images).numpy()


def _load_pyfunc(data_path: str, model_config=None) -> EncoderPredictor:
    from dlfm.models.serialization import load_encoder

    return EncoderPredictor(load_encoder(data_path))
