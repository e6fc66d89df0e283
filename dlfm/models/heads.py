"""Plain heads and the decoder that reconstructs the input from an encoder's feature map."""

from __future__ import annotations

import math

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """Embedding → class logits (one linear layer after dropout)."""

    def __init__(self, embed_dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, num_classes))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding)


class RegressionHead(nn.Module):
    """Embedding → standardised targets: Linear → ReLU → Linear, as in the seed's transfer head."""

    def __init__(self, embed_dim: int, num_targets: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_targets))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding)


class Decoder(nn.Module):
    """Upsamples a (C, h, w) feature map by ``reduction`` (a power of 2), then resizes to exactly H×W.

    The final bilinear resize lets any image side work (150 px is no multiple of 32).
    """

    def __init__(self, feature_channels: int, reduction: int, out_chans: int = 1, width: int = 128):
        super().__init__()
        n_up = int(round(math.log2(reduction)))
        if 2**n_up != reduction:
            raise ValueError(f"decoder needs a power-of-2 reduction, got {reduction}")
        layers: list[nn.Module] = [nn.Conv2d(feature_channels, width, 1), nn.ReLU(inplace=True)]
        channels = width
        for _ in range(n_up):
            out = max(channels // 2, 16)
            layers += [nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        # Images are min-max normalised to [0, 1], so a sigmoid output matches their range.
        layers += [nn.Conv2d(channels, out_chans, 3, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        out = self.net(features)
        if out.shape[-2:] != output_size:
            out = nn.functional.interpolate(out, size=output_size, mode="bilinear", align_corners=False)
        return out
