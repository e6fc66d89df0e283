"""Encoder registry: ``create_encoder("resnet18", in_chans=1)`` in the timm style.

Every encoder maps (B, C, H, W) images to a feature map (B, feature_channels, h, w), pools it
to an embedding (B, embed_dim) for heads, and exposes its intermediate maps (``forward_levels``)
so that a decoder can draw from a map fine enough to keep the arcs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from dlfm.errors import ConfigError
from dlfm.models.heads import DECODE_REDUCTION  # the stride the reconstruction decoder reads
from dlfm.models.layers import LAYER_NORM_EPS, SinCosPositions, init_vit_weights, transformer_blocks


class Encoder(nn.Module):
    """Base class: ``forward_features`` gives the feature map, ``forward`` the pooled embedding."""

    feature_channels: int  # channels of the feature map (= embed_dim after global pooling)
    reduction: int  # input size / feature-map size
    min_image_size: int  # smallest input side (pixels) that keeps a >= 1 pixel feature map
    levels: tuple[tuple[int, int], ...]  # (channels, reduction) of each forward_levels map, fine to coarse

    def forward_levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps from fine to coarse; the last one is ``forward_features``."""
        return [self.forward_features(images)]

    @property
    def embed_dim(self) -> int:
        """Length of the pooled embedding."""
        return self.feature_channels

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled embedding (B, embed_dim)."""
        return self.forward_features(images).mean(dim=(2, 3))

    def check_image_size(self, image_size: int) -> None:
        """Raise ConfigError when this encoder (and its decoder) cannot take ``image_size``."""
        if image_size < self.min_image_size:
            raise ConfigError(
                f"encoder {self.name!r} needs images of at least {self.min_image_size} px a side, "
                f"got {image_size} px; choose another encoder (e.g. conv4) or simulate larger images"
            )


ENCODER_KINDS = ("cnn", "vit")  # cnn: dense feature maps (mae hides pixels, SparK) | vit: tokens (mae drops them, MAE)


@dataclass(frozen=True)
class EncoderRow:
    """One registry row: how to build the encoder and the facts other modules read without building it."""

    factory: Callable[..., Encoder]
    kind: str  # one of ENCODER_KINDS; picks the objectives' way to mask (dlfm.objectives.MASKINGS)
    token_size: int | None = None  # vit: side of a token patch (px); None for cnn


ENCODERS: dict[str, EncoderRow] = {}


def register_encoder(name: str, kind: str = "cnn", token_size: int | None = None):
    """Decorator that adds an encoder factory to the registry under ``name``, with its kind (cnn | vit)."""
    if kind not in ENCODER_KINDS:
        raise ValueError(f"unknown encoder kind {kind!r}; choose one of {', '.join(ENCODER_KINDS)}")

    def decorate(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        ENCODERS[name] = EncoderRow(factory, kind, token_size)
        return factory

    return decorate


def encoder_row(name: str) -> EncoderRow:
    """The registry row of ``name``; ConfigError naming the choices when unknown."""
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {', '.join(list_encoders())}")
    return ENCODERS[name]


def list_encoders() -> list[str]:
    """Names of all registered encoders."""
    return sorted(ENCODERS)


def create_encoder(name: str, in_chans: int = 1, pixel_scale: float = 0.0, **kwargs) -> Encoder:
    """Build a registered encoder with random weights (nothing is downloaded).

    ``pixel_scale`` (arcsec/px) is the grid it reads every image at (``dlfm.data.resample``); 0 reads each
    instrument at its own grid. It is part of the arch config, so a saved encoder and its random twin keep it.
    """
    if not (isinstance(pixel_scale, (int, float)) and pixel_scale >= 0):
        raise ConfigError(f"pixel_scale must be a non-negative number of arcsec per pixel (0: native grids), got {pixel_scale!r}")
    encoder = encoder_row(name).factory(in_chans=in_chans, **kwargs)
    encoder.name = name
    encoder.pixel_scale = float(pixel_scale)
    encoder.arch_config = {"name": name, "in_chans": in_chans, **({"pixel_scale": float(pixel_scale)} if pixel_scale else {}), **kwargs}
    return encoder


RESNET_STEMS = {
    # name: (first conv kernel, its stride, max-pool after it) -> output stride of layer4
    "imagenet": (7, 2, True),  # stride 32: a 2x2 layer4 map at 64 px; cheapest
    "stride2": (3, 2, False),  # stride 16: 4x4 at 64 px, about 4x the imagenet compute
    "small": (3, 1, False),  # stride 8: 8x8 at 64 px, about 16x the imagenet compute
}


class ResNet18Encoder(Encoder):
    """torchvision ResNet18, random init, 1-channel stem, cut before avgpool.

    The stem (``RESNET_STEMS``) sets the output stride: ``imagenet`` keeps the 7×7 stride-2 conv
    and max-pool (a 64-px image gives a 2×2 layer4 map), ``small`` (3×3 stride-1, no max-pool)
    keeps 8×8 at 16× the compute. ``forward_levels`` returns layer2, layer3 and layer4, so a
    decoder can work at stride 8 with any stem.
    """

    def __init__(self, in_chans: int = 1, stem: str = "imagenet"):
        super().__init__()
        if stem not in RESNET_STEMS:
            raise ConfigError(f"unknown resnet18 stem {stem!r}; choose one of {', '.join(RESNET_STEMS)}")
        import torchvision  # imported here: it pulls in torch._dynamo, seconds that a bad param shouldn't pay

        kernel, stride, pool = RESNET_STEMS[stem]
        net = torchvision.models.resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=False)
        if not pool:
            net.maxpool = nn.Identity()
        self.reduction = 8 * stride * (2 if pool else 1)
        self.body = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
        )
        self.feature_channels = 512
        self.min_image_size = max(self.reduction, 8)
        # layer2, layer3, layer4 (indices 5-7 of body): strides reduction/4, /2 and reduction.
        self._level_indices = (5, 6, 7)
        self.levels = ((128, self.reduction // 4), (256, self.reduction // 2), (512, self.reduction))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward_levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        out, maps = images, []
        for index, layer in enumerate(self.body):
            out = layer(out)
            if index in self._level_indices:
                maps.append(out)
        return maps


class Conv4Encoder(Encoder):
    """The seed's small autoencoder encoder: 4 stride-2 convs, 1→16→32→64→128 channels."""

    def __init__(self, in_chans: int = 1, width: int = 16):
        super().__init__()
        channels = [in_chans, width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.feature_channels = channels[-1]
        self.reduction = 16
        self.min_image_size = 16
        self.levels = ((channels[-2], 8), (channels[-1], 16))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward_levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        # Each block is conv + BN + ReLU: the third block's ReLU (index 8) ends the stride-8 map.
        stride8 = self.body[:9](images)
        return [stride8, self.body[9:](stride8)]


@register_encoder("resnet18")
def resnet18(in_chans: int = 1, stem: str = "imagenet") -> Encoder:
    """ResNet18 with a 1-channel stem; ``stem`` is one of RESNET_STEMS (imagenet, stride2, small)."""
    return ResNet18Encoder(in_chans=in_chans, stem=stem)


@register_encoder("conv4")
def conv4(in_chans: int = 1, width: int = 16) -> Encoder:
    """The seed's 4-layer convolutional encoder."""
    return Conv4Encoder(in_chans=in_chans, width=width)



VIT_PATCH_SIZES = (4, 8)  # token side (px): 8 gives an 8x8 grid at 64 px, 4 a 16x16 grid (4x the tokens)


class VisionTransformerEncoder(Encoder):
    """A plain ViT (Dosovitskiy et al. 2021) for small single-channel images, random init, no class token.

    Patches of ``patch_size`` px are embedded by one strided convolution, get fixed sine-cosine
    positions and pass ``depth`` pre-norm blocks and a final LayerNorm. The token grid reshaped to
    (dim, rows, cols) is the feature map; with 4-px patches it is average-pooled 2x2 so that the map
    the decoders read (and the one pooled into the embedding) is at stride 8, like the CNNs'.
    The embedding is the mean token (global average pooling, which MAE fine-tunes with).
    ``forward_tokens(images, keep)`` runs only the kept tokens: the MAE encoder (He et al. 2022).
    """

    def __init__(self, in_chans: int = 1, patch_size: int = 8, dim: int = 192, depth: int = 12, heads: int = 3):
        super().__init__()
        if patch_size not in VIT_PATCH_SIZES:
            raise ConfigError(f"vit patch_size must be one of {VIT_PATCH_SIZES}, got {patch_size!r}")

        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.positions = SinCosPositions(dim, patch_size)
        self.blocks = transformer_blocks(dim, depth, heads)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.apply(init_vit_weights)
        self.pool = max(1, DECODE_REDUCTION // patch_size)  # token cells averaged into one feature-map cell
        self.feature_channels = dim
        self.reduction = patch_size * self.pool
        self.min_image_size = self.reduction
        self.levels = ((dim, patch_size),) * (self.pool > 1) + ((dim, self.reduction),)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(dim, -1))  # as MAE: the patch embedding is a linear layer

    def check_image_size(self, image_size: int) -> None:
        """Also refuse a size that is no whole number of tokens: the patch embedding would drop the last pixels."""
        super().check_image_size(image_size)
        if image_size % self.patch_size:
            raise ConfigError(
                f"encoder {self.name!r} cuts images into {self.patch_size}-px tokens, and {image_size} px is no multiple of "
                f"{self.patch_size} (the last {image_size % self.patch_size} px would be dropped); choose a CNN encoder "
                "(conv4, resnet18) for these images, or leave that instrument out (e.g. -P pretrain_mix=model_i=0,model_ii=1,model_iii=1)"
            )

    def forward_tokens(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Encoded tokens (B, n, dim) in row-major grid order, or of the ``keep`` indices (B, n_keep) only; and the grid."""
        x = self.patch_embed(images)
        batch, dim, rows, cols = x.shape
        x = x.flatten(2).transpose(1, 2) + self.positions(rows, cols, x)
        if keep is not None:
            x = torch.gather(x, 1, keep[..., None].expand(-1, -1, dim))
        for block in self.blocks:
            x = block(x)
        return self.norm(x), (rows, cols)

    def forward_levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        tokens, (rows, cols) = self.forward_tokens(images)
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, rows, cols)
        return [grid, nn.functional.avg_pool2d(grid, self.pool)] if self.pool > 1 else [grid]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_levels(images)[-1]


VIT_SIZES = {
    # name: (width, depth, heads), the DeiT/timm tiny and small widths
    "tiny": (192, 12, 3),  # about 5.5 M parameters
    "small": (384, 12, 6),  # about 21 M parameters
}
VIT_PATCH_SUFFIXES = {"": 8, "_p4": 4}  # vit_tiny: 8-px tokens (default); vit_tiny_p4: 4-px tokens

for _size, (_dim, _depth, _heads) in VIT_SIZES.items():
    for _suffix, _patch in VIT_PATCH_SUFFIXES.items():
        register_encoder(f"vit_{_size}{_suffix}", kind="vit", token_size=_patch)(
            partial(VisionTransformerEncoder, patch_size=_patch, dim=_dim, depth=_depth, heads=_heads))
