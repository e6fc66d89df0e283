"""Device, AMP and rank, resolved once up front so the loop has no branches for them."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import torch

from dlfm.errors import ConfigError


@dataclass
class Runtime:
    device: torch.device
    autocast: Callable[[], ContextManager]  # a fresh autocast context (nullcontext on the CPU)
    scaler: torch.amp.GradScaler  # enabled only for fp16 autocast
    amp_dtype: str  # "bf16", "fp16" or "off"
    rank: int = 0
    world_size: int = 1

    @property
    def is_main_process(self) -> bool:
        """Only rank 0 logs, checkpoints and registers."""
        return self.rank == 0


def resolve_device(requested: str) -> torch.device:
    """auto → cuda, then mps, then cpu; an explicit device that is absent is a ConfigError."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was requested but no CUDA GPU is visible; use device=auto or device=cpu")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device=mps was requested but MPS is not available; use device=auto or device=cpu")
    if requested == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(requested)


def make_runtime(requested_device: str) -> Runtime:
    """AMP on CUDA (bf16 where supported, else fp16 with a GradScaler); plain fp32 elsewhere."""
    device = resolve_device(requested_device)
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        amp_dtype = "bf16" if dtype == torch.bfloat16 else "fp16"
        autocast = lambda: torch.autocast("cuda", dtype=dtype)  # noqa: E731
    else:
        amp_dtype = "off"
        autocast = contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu", enabled=amp_dtype == "fp16")
    return Runtime(device, autocast, scaler, amp_dtype, rank, world_size)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for shuffling and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
