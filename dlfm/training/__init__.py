"""The one training loop shared by every objective (autoencoder, supervised, multitask)."""

from dlfm.training.config import OBJECTIVES, TrainConfig
from dlfm.training.loop import FitResult, fit

__all__ = ["OBJECTIVES", "TrainConfig", "FitResult", "fit"]
