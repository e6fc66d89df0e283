"""The model every training objective shares: encoder + optional decoder + optional head."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from dlfm.models.encoders import Encoder, create_encoder
from dlfm.models.heads import ClassificationHead, Decoder
from dlfm.objectives import get_objective


class ModelOutput(NamedTuple):
    logits: torch.Tensor | None  # (B, num_classes), or None without a classification head
    reconstruction: torch.Tensor | None  # (B, 1, H, W), or None without a decoder
    embedding: torch.Tensor  # (B, embed_dim)


class LensModel(nn.Module):
    """Shared encoder with a classification head and/or a decoder reading its stride-8 maps."""

    def __init__(self, encoder: Encoder, num_classes: int | None, reconstruct: bool):
        super().__init__()
        self.encoder = encoder
        self.head = ClassificationHead(encoder.embed_dim, num_classes) if num_classes else None
        self.decoder = Decoder(encoder.levels) if reconstruct else None

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> ModelOutput:
        """``mask`` (B, 1, H, W; 1 = hidden) zeroes the hidden pixels before the encoder sees them."""
        inputs = images if mask is None else images * (1.0 - mask)
        if self.decoder is None:
            levels = [self.encoder.forward_features(inputs)]
        else:
            levels = self.encoder.forward_levels(inputs)
        embedding = levels[-1].mean(dim=(2, 3))
        logits = self.head(embedding) if self.head is not None else None
        reconstruction = self.decoder(levels, images.shape[-2:]) if self.decoder is not None else None
        return ModelOutput(logits, reconstruction, embedding)


def build_model(objective: str, encoder_name: str, num_classes: int, encoder_kwargs: dict | None = None) -> LensModel:
    """Model for one objective (its parts from the objectives table); the encoder has random weights."""
    spec = get_objective(objective)
    encoder = create_encoder(encoder_name, in_chans=1, **(encoder_kwargs or {}))
    return LensModel(encoder, num_classes if spec.classifies else None, spec.decodes)
