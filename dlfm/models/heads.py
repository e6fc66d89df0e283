"""Plain heads and the decoder that reconstructs the input from an encoder's feature map."""

from __future__ import annotations

import math

import torch
from torch import nn

from dlfm.models.layers import LAYER_NORM_EPS, SinCosPositions, init_vit_weights, transformer_blocks


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

    def __init__(self, levels: tuple[tuple[int, int], ...], out_chans: int = 1, width: int = 128,
                 min_reduction: int = DECODE_REDUCTION):
        super().__init__()
        used = [(index, channels, reduction) for index, (channels, reduction) in enumerate(levels)
                if reduction >= min_reduction]
        if not used:
            raise ValueError(f"decoder needs an encoder level at stride >= {min_reduction}, got {levels}")
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


SUPERRES_REDUCTION = 4  # finest stride the super-resolution head reads: the low-resolution pixel (4 px of 64)


class SuperResolutionHead(nn.Module):
    """Encoder maps + the bicubic image → the high-resolution image: bicubic plus a ``Decoder`` residual.

    The same head for every arm: a ``Decoder`` over the encoder levels at stride >= 4 (the
    low-resolution pixel; the autoencoder's stride-8 bottleneck is no aim here), its last layer at
    zero, so an untrained head returns the bicubic image exactly and training learns the residual.
    """

    def __init__(self, levels: tuple[tuple[int, int], ...], width: int = 128):
        super().__init__()
        self.decoder = Decoder(levels, out_chans=1, width=width, min_reduction=SUPERRES_REDUCTION)

    def forward(self, levels: list[torch.Tensor], upsampled: torch.Tensor) -> torch.Tensor:
        return upsampled + self.decoder(levels, upsampled.shape[-2:])


class FrozenEncoder(nn.Module):
    """An encoder that never trains: eval mode (BatchNorm on running statistics) and no gradient, whatever ``train()`` says."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.levels = encoder.levels

    def train(self, mode: bool = True) -> "FrozenEncoder":
        super().train(mode)
        self.encoder.eval()
        return self

    @torch.no_grad()
    def forward_levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder.forward_levels(images)


class SuperResolutionNet(nn.Module):
    """Bicubic 64-px image → encoder levels → ``SuperResolutionHead``: the model of every super-resolution arm."""

    def __init__(self, encoder: nn.Module, head: SuperResolutionHead):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, upsampled: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.forward_levels(upsampled), upsampled)


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
        """Mask (B, 1, H, W) of 1.0 on hidden pixels, 0.0 on visible ones (partial edge cells stay visible).

        Without ``generator`` the token-level noise is drawn on the images' device (torch's seeded RNG of
        that device): the training step then has no host work and no copy. With one (evaluation's fixed
        masks), it is drawn on the host from it and copied, reproducible whatever the device.
        """
        batch, _, height, width = images.shape
        rows, cols = height // self.patch_size, width // self.patch_size
        n_patches = rows * cols
        n_hidden = round(n_patches * self.mask_ratio)  # static: the same count in every image and every step
        if generator is None:
            noise = torch.rand(batch, n_patches, device=images.device)
        else:
            noise = torch.rand(batch, n_patches, generator=generator).to(images.device)
        order = noise.argsort(dim=1)[:, :n_hidden]
        cells = torch.zeros(batch, n_patches, device=images.device, dtype=images.dtype).scatter_(1, order, 1.0)
        mask = cells.view(batch, 1, rows, cols).repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)
        return nn.functional.pad(mask, (0, width - mask.shape[-1], 0, height - mask.shape[-2]))


PIXEL_NORM_EPS = 1e-6  # added to each patch's pixel variance before normalising by it (MAE's norm_pix_loss)


def patch_statistics(images: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch pixel mean and std (B, C, rows, cols) of the whole ``patch_size`` cells of ``images``."""
    rows, cols = images.shape[-2] // patch_size, images.shape[-1] // patch_size
    cells = images[..., : rows * patch_size, : cols * patch_size].float()
    cells = cells.unfold(2, patch_size, patch_size).unfold(3, patch_size, patch_size)  # (B, C, rows, cols, p, p)
    mean = cells.mean(dim=(-1, -2))
    var = cells.var(dim=(-1, -2), unbiased=False)
    return mean, (var + PIXEL_NORM_EPS).sqrt()


def expand_cells(values: torch.Tensor, patch_size: int, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, rows, cols) per-cell values repeated to pixels and padded (edge replicated) to ``size``."""
    pixels = values.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)
    pad = (0, size[1] - pixels.shape[-1], 0, size[0] - pixels.shape[-2])
    return nn.functional.pad(pixels, pad, mode="replicate") if any(pad) else pixels


class MaskedTokenDecoder(nn.Module):
    """MAE's light decoder (He et al. 2022, ``models_mae.py``): encoded visible tokens + mask tokens → pixels.

    The visible tokens are projected to ``width``, a shared learned mask token fills every hidden
    slot, ``ids_restore`` unshuffles them to grid order, fixed sine-cosine positions are added, and
    ``depth`` transformer blocks and a linear layer predict each token's ``patch_size``² pixels,
    normalised by that patch's own mean and std (norm_pix_loss). The reconstruction returned is in
    image units: the prediction de-normalised with the target patch's statistics (as MAE's figures
    are), so only its normalised shape is learned; the loss (``masked_norm_mse``) cancels them out.
    """

    def __init__(self, encoder_dim: int, patch_size: int, out_chans: int = 1, width: int = 512, depth: int = 8):
        super().__init__()

        self.patch_size, self.out_chans, self.width, self.depth = patch_size, out_chans, width, depth
        self.embed = nn.Linear(encoder_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.positions = SinCosPositions(width, patch_size)
        self.blocks = transformer_blocks(width, depth, max(1, width // 32))  # 32 channels per head: MAE's 512 wide, 16 heads
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.predict = nn.Linear(width, patch_size * patch_size * out_chans)
        self.apply(init_vit_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def set_baseline(self, mean_image: torch.Tensor) -> None:
        """No-op: normalised patches have no mean image to start from (the Decoder's residual start)."""

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int], images: torch.Tensor,
                statistics: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Reconstruction (B, C, H, W) of ``images`` from ``latent`` (B, n_keep, encoder_dim) of the kept tokens
        (``statistics``: the images' ``patch_statistics``, when the caller has them already)."""

        x = self.embed(latent)
        batch, kept, width = x.shape
        n_tokens = ids_restore.shape[1]
        x = torch.cat([x, self.mask_token.to(x.dtype).expand(batch, n_tokens - kept, width)], dim=1)
        x = torch.gather(x, 1, ids_restore[..., None].expand(-1, -1, width))
        x = x + self.positions(*grid, x)
        for block in self.blocks:
            x = block(x)
        patches = self.predict(self.norm(x))  # (B, rows*cols, p*p*C), normalised pixels
        rows, cols, p = *grid, self.patch_size
        normalised = patches.reshape(batch, rows, cols, p, p, self.out_chans).permute(0, 5, 1, 3, 2, 4)
        normalised = normalised.reshape(batch, self.out_chans, rows * p, cols * p)
        size = images.shape[-2:]
        normalised = nn.functional.pad(normalised, (0, size[1] - cols * p, 0, size[0] - rows * p))
        mean, std = statistics if statistics is not None else patch_statistics(images, p)
        return normalised * expand_cells(std, p, size) + expand_cells(mean, p, size)
