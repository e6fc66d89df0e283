"""The one training loop of every arm: a head on cached embeddings, or encoder + head on images.

Frozen arms pass the head alone and embeddings as inputs; fine-tune arms pass
``nn.Sequential(encoder, head)`` and images. Same optimiser (AdamW), schedule (cosine per step),
step rule and seeding either way, so the arms differ only in what they train.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Schedule:
    """How long and how fast; one instance serves every arm of a grid."""

    epochs: int  # passes over the labelled subset
    min_steps: int  # optimiser steps at least (tiny budgets still train)
    batch_size: int  # samples per step
    weight_decay: float  # AdamW weight decay

    def steps(self, n: int) -> int:
        """Optimiser steps for a subset of ``n`` samples."""
        return max(self.epochs * math.ceil(n / min(self.batch_size, n)), self.min_steps)


def fit(model: nn.Module, param_groups: list[dict], inputs: torch.Tensor, targets: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], schedule: Schedule, seed: int,
        device: torch.device, autocast: Callable[[], ContextManager] = contextlib.nullcontext,
        safe_point: Callable[[], None] = lambda: None) -> list[float]:
    """Train ``model`` in place for ``schedule.steps(len(inputs))`` steps; return the mean loss of each epoch.

    ``autocast`` is the resolved precision's context factory (``Runtime.autocast``): forward and loss run in it.
    ``safe_point`` runs after every step: a stop request raises there, never inside a store write.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(param_groups, weight_decay=schedule.weight_decay)
    total_steps = schedule.steps(len(inputs))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    batch = min(schedule.batch_size, len(inputs))
    model.to(device).train()
    history, step = [], 0
    while step < total_steps:
        losses = []
        # drop the ragged last batch: a BatchNorm batch of one sample has no variance
        for index in torch.randperm(len(inputs), generator=generator).split(batch):
            if step == total_steps or (len(index) < batch and losses):
                break
            with autocast():
                loss = loss_fn(model(inputs[index].to(device)).float(), targets[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            step += 1
            safe_point()
        history.append(float(np.mean(losses)))
    return history


@torch.no_grad()
def predict(model: nn.Module, inputs: np.ndarray | torch.Tensor, device: torch.device, batch_size: int = 256,
            autocast: Callable[[], ContextManager] = contextlib.nullcontext,
            safe_point: Callable[[], None] = lambda: None) -> np.ndarray:
    """Outputs of ``model`` in eval mode (BatchNorm on running statistics), batched, as float32."""
    model.to(device).eval()
    inputs = torch.as_tensor(inputs)
    outputs = []
    for start in range(0, len(inputs), batch_size):
        with autocast():
            outputs.append(model(inputs[start:start + batch_size].to(device)).float().cpu())
        safe_point()
    return torch.cat(outputs).numpy()
