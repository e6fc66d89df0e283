"""The encoders of the evaluation engine: the seeded random encoder, and the frozen embedding pass (pure torch)."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import numpy as np
import torch
from torch import nn


def random_init_seed(seed: int) -> int:
    """The torch seed of the random arm: a stream apart from training seeds, so it never equals a pretrained init."""
    return 1_000_003 * (seed + 1)


def random_encoder_like(encoder, seed: int):
    """Same architecture as ``encoder``, fresh seeded random weights (nothing loaded)."""
    from dlfm.models import create_encoder

    torch.manual_seed(random_init_seed(seed))
    return create_encoder(encoder.name, **{k: v for k, v in encoder.arch_config.items() if k != "name"})


@torch.no_grad()
def embed(encoder: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256,
          autocast: Callable[[], ContextManager] = contextlib.nullcontext,
          safe_point: Callable[[], None] = lambda: None) -> np.ndarray:
    """Float32 embeddings of all images by a frozen encoder in eval mode (BatchNorm uses running stats)."""
    encoder.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        with autocast():
            out.append(encoder(batch).float().cpu())
        safe_point()  # a stop request raises between batches
    return torch.cat(out).numpy()
