"""The encoders of the evaluation engine: the seeded random encoder, and the frozen embedding pass (pure torch)."""

from __future__ import annotations

import contextlib
import copy
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
def adapt_batchnorm(encoder: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256) -> nn.Module:
    """A copy of ``encoder`` whose BatchNorm running statistics are re-estimated on ``images`` (no labels; weights as saved).

    AdaBN (Li et al. 2016, arXiv 1603.04779), with torch's ``update_bn``. Training normalises every batch by its
    own statistics, and a multi-instrument corpus batches each instrument apart; so the saved running statistics
    are a blend of instruments, led by the last few batches, which fits none of them. A frozen encoder read with
    them gave Model I macro AUC 0.55, below a random encoder (docs/results.md, issue 27). An encoder without
    BatchNorm (the ViTs) comes back unchanged.
    """
    adapted = copy.deepcopy(encoder).to(device)
    batches = (torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
               for start in range(0, len(images), batch_size))
    torch.optim.swa_utils.update_bn(batches, adapted, device=device)
    return adapted.eval()


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
