"""Encoder registry: ``create_encoder("resnet18", in_chans=1)`` in the timm style.

Every encoder maps (B, C, H, W) images to a feature map (B, feature_channels, h, w) for a
decoder, and pools it to an embedding (B, embed_dim) for heads.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from dlfm.errors import ConfigError


class Encoder(nn.Module):
    """Base class: ``forward_features`` gives the feature map, ``forward`` the pooled embedding."""

    feature_channels: int  # channels of the feature map (= embed_dim after global pooling)
    reduction: int  # input size / feature-map size
    min_image_size: int  # smallest input side (pixels) that keeps a >= 1 pixel feature map

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


ENCODERS: dict[str, Callable[..., Encoder]] = {}


def register_encoder(name: str):
    """Decorator that adds an encoder factory to the registry under ``name``."""

    def decorate(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        ENCODERS[name] = factory
        return factory

    return decorate


def list_encoders() -> list[str]:
    """Names of all registered encoders."""
    return sorted(ENCODERS)


def create_encoder(name: str, in_chans: int = 1, **kwargs) -> Encoder:
    """Build a registered encoder with random weights (nothing is downloaded)."""
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {', '.join(list_encoders())}")
    encoder = ENCODERS[name](in_chans=in_chans, **kwargs)
    encoder.name = name
    encoder.arch_config = {"name": name, "in_chans": in_chans, **kwargs}
    return encoder


class ResNet18Encoder(Encoder):
    """torchvision ResNet18, random init, 1-channel stem, cut before avgpool.

    ``stem="imagenet"`` (default) keeps the 7×7 stride-2 conv and max-pool: a 64-px image gives
    a 2×2 feature map. ``stem="small"`` (3×3 stride-1 conv, no max-pool) keeps an 8×8 map for
    64-px images at about 16× the compute; worth it on a GPU, too slow for a 2-core CPU.
    """

    def __init__(self, in_chans: int = 1, stem: str = "imagenet"):
        super().__init__()
        if stem not in ("small", "imagenet"):
            raise ConfigError(f"unknown resnet18 stem {stem!r}; choose 'small' or 'imagenet'")
        import torchvision  # imported here: it pulls in torch._dynamo, seconds that a bad param shouldn't pay

        net = torchvision.models.resnet18(weights=None)
        if stem == "small":
            net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
            self.reduction = 8
        else:
            net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.reduction = 32
        self.body = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
        )
        self.feature_channels = 512
        self.min_image_size = 32 if stem == "imagenet" else 8

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


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

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


@register_encoder("resnet18")
def resnet18(in_chans: int = 1, stem: str = "imagenet") -> Encoder:
    """ResNet18 with a 1-channel stem; ``stem`` is 'small' (64-px images) or 'imagenet'."""
    return ResNet18Encoder(in_chans=in_chans, stem=stem)


@register_encoder("conv4")
def conv4(in_chans: int = 1, width: int = 16) -> Encoder:
    """The seed's 4-layer convolutional encoder."""
    return Conv4Encoder(in_chans=in_chans, width=width)
