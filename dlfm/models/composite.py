"""The model every training objective shares: encoder + optional decoder + optional head."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from dlfm.models.encoders import Encoder, create_encoder
from dlfm.models.heads import ClassificationHead, Decoder


class ModelOutput(NamedTuple):
    logits: torch.Tensor | None  # (B, num_classes), or None without a classification head
    reconstruction: torch.Tensor | None  # (B, 1, H, W), or None without a decoder
    embedding: torch.Tensor  # (B, embed_dim)


class LensModel(nn.Module):
    """Shared encoder with a classification head and/or a reconstruction decoder."""

    def __init__(self, encoder: Encoder, num_classes: int | None, reconstruct: bool):
        super().__init__()
        self.encoder = encoder
        self.head = ClassificationHead(encoder.embed_dim, num_classes) if num_classes else None
        self.decoder = Decoder(encoder.feature_channels, encoder.reduction) if reconstruct else None

    def forward(self, images: torch.Tensor) -> ModelOutput:
        features = self.encoder.forward_features(images)
        embedding = features.mean(dim=(2, 3))
        logits = self.head(embedding) if self.head is not None else None
        reconstruction = self.decoder(features, images.shape[-2:]) if self.decoder is not None else None
        return ModelOutput(logits, reconstruction, embedding)


OBJECTIVE_PARTS = {
    # objective: (classification head, reconstruction decoder)
    "autoencoder": (False, True),
    "supervised": (True, False),
    "multitask": (True, True),
}


def build_model(objective: str, encoder_name: str, num_classes: int, encoder_kwargs: dict | None = None) -> LensModel:
    """Model for one objective; the encoder comes from the registry with random weights."""
    use_head, use_decoder = OBJECTIVE_PARTS[objective]
    encoder = create_encoder(encoder_name, in_chans=1, **(encoder_kwargs or {}))
    return LensModel(encoder, num_classes if use_head else None, use_decoder)
