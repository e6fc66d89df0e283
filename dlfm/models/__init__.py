"""Encoders (a timm-style registry), the reconstruction decoder and plain heads."""

from dlfm.models.encoders import ENCODERS, Encoder, create_encoder, list_encoders, register_encoder
from dlfm.models.heads import ClassificationHead, Decoder, RegressionHead
from dlfm.models.composite import LensModel, build_model

__all__ = [
    "ENCODERS", "Encoder", "create_encoder", "list_encoders", "register_encoder",
    "ClassificationHead", "Decoder", "RegressionHead", "LensModel", "build_model",
]
