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


DECODE_REDUCTION = 8  # finest stride a decoder reads: 8 px cells keep the arcs of a 64-px image (issue 12)


class Decoder(nn.Module):
    """Pixels from an encoder's stride-``DECODE_REDUCTION`` feature maps (FPN / SparK-decoder style).

    Every encoder level at stride >= 8 is projected to ``width`` channels, upsampled to the finest
    of them and summed; transposed convolutions then upsample to the image and a bilinear resize
    fixes the exact H×W (150 px is no multiple of 8). Only encoder maps enter: there is no skip from
    the input or from the stride-2/4 stages, so the image has to pass the stride-8 bottleneck.

    The output is ``baseline`` (the mean train image, set by the loop; a constant, so no shortcut)
    plus a learned residual whose last layer starts at zero: training starts exactly at the
    mean-image predictor and every step spent goes into per-image structure (the arcs), which a
    demo-size run (tens of steps) cannot afford to spend on learning the mean ring first.
    """

    def __init__(self, levels: tuple[tuple[int, int], ...], out_chans: int = 1, width: int = 128):
        super().__init__()
        used = [(index, channels, reduction) for index, (channels, reduction) in enumerate(levels)
                if reduction >= DECODE_REDUCTION]
        if not used:
            raise ValueError(f"decoder needs an encoder level at stride >= {DECODE_REDUCTION}, got {levels}")
        self.level_indices = [index for index, _, _ in used]
        self.reduction = min(reduction for _, _, reduction in used)
        n_up = int(round(math.log2(self.reduction)))
        if 2**n_up != self.reduction:
            raise ValueError(f"decoder needs a power-of-2 reduction, got {self.reduction}")
        self.lateral = nn.ModuleList(nn.Conv2d(channels, width, 1) for _, channels, _ in used)
        layers: list[nn.Module] = [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
        for _ in range(n_up):
            out = max(channels // 2, 16)
            layers += [nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        residual = nn.Conv2d(channels, out_chans, 3, padding=1)
        nn.init.zeros_(residual.weight)
        nn.init.zeros_(residual.bias)
        self.net = nn.Sequential(*layers, residual)
        self.register_buffer("baseline", torch.zeros(1, out_chans, 1, 1))  # replaced by set_baseline

    def set_baseline(self, mean_image: torch.Tensor) -> None:
        """Use ``mean_image`` (1, C, H, W) as the prediction the residual starts from."""
        self.baseline = mean_image.detach().clone().to(self.baseline.device)

    def forward(self, levels: list[torch.Tensor], output_size: tuple[int, int]) -> torch.Tensor:
        maps = [levels[index] for index in self.level_indices]
        size = maps[0].shape[-2:]
        fused = sum(
            nn.functional.interpolate(lateral(m), size=size, mode="nearest") if m.shape[-2:] != size else lateral(m)
            for lateral, m in zip(self.lateral, maps)
        )
        out = self.net(fused)
        if out.shape[-2:] != output_size:
            out = nn.functional.interpolate(out, size=output_size, mode="bilinear", align_corners=False)
        baseline = self.baseline
        if baseline.shape[-2:] != output_size and baseline.shape[-1] != 1:
            baseline = nn.functional.interpolate(baseline, size=output_size, mode="bilinear", align_corners=False)
        return out + baseline


class PatchMasker(nn.Module):
    """Random patch masks for masked-image modelling, as SparK's ``SparK.mask``.

    Each image gets exactly round(ratio × n_patches) hidden patches on a grid of
    ``patch_size``-pixel cells (a random permutation per image, so the ratio is exact). The
    masked input is the image with hidden pixels set to 0, SparK's ``inp * active``; a CNN then
    sees the visible pixels only through dense convolutions (ConvNeXt-V2's dense equivalent of
    sparse convolution, without the per-layer re-masking).
    """

    def __init__(self, patch_size: int, mask_ratio: float):
        super().__init__()
        self.patch_size = patch_size
        self.mask_ratio = mask_ratio

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mask (B, 1, H, W) of 1.0 on hidden pixels, 0.0 on visible ones (partial edge cells stay visible)."""
        batch, _, height, width = images.shape
        rows, cols = height // self.patch_size, width // self.patch_size
        n_patches = rows * cols
        n_hidden = round(n_patches * self.mask_ratio)
        order = torch.rand(batch, n_patches, generator=generator).argsort(dim=1)[:, :n_hidden]
        cells = torch.zeros(batch, n_patches).scatter_(1, order, 1.0).view(batch, 1, rows, cols)
        mask = cells.repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)
        mask = nn.functional.pad(mask, (0, width - mask.shape[-1], 0, height - mask.shape[-2]))
        return mask.to(images.device, non_blocking=True)  # no wait for the device (the mask is drawn on the host)
