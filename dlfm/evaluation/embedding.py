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


@torch.no_grad()
def reconstruction_errors(reconstructor, images: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Each image's reconstruction error (its objective's reconstruction part, per image) by a saved encoder + decoder.

    A masked objective hides the same seeded patches in every call (the loop's evaluation mask seed), so
    two sets of images are scored under the same masks.
    """
    from dlfm.models.encoders import encoder_row
    from dlfm.training.evaluate import EVAL_MASK_SEED
    from dlfm.training.objectives import Objective

    model = reconstructor.model.eval().to(device)
    objective = Objective(reconstructor.objective, kind=encoder_row(model.encoder.name).kind, **reconstructor.masking)
    generator = torch.Generator().manual_seed(EVAL_MASK_SEED)
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        mask = objective.make_mask(batch, generator)
        out.append(objective.per_image_error(model(batch, mask).reconstruction, batch, mask).cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)
