"""One epoch's batches: index batches (sharded across ranks), batches per image-size group, and augmentation."""

from __future__ import annotations

import math

import torch


def augment_batch(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random rot90 (k = 0..3) and horizontal flip per image: the dihedral symmetries of a lens image.

    Drawn on the images' device (torch's seeded RNG there; ``generator``, a host one, when given) and applied
    with ``torch.where`` over the three rotations: no index list, no host read, no data-dependent shape.
    """
    n, device = images.shape[0], images.device
    if generator is None:
        turns, flips = torch.randint(0, 4, (n,), device=device), torch.rand(n, device=device) < 0.5
    else:
        turns = torch.randint(0, 4, (n,), generator=generator).to(device)
        flips = (torch.rand(n, generator=generator) < 0.5).to(device)
    out = images
    square = images.shape[-1] == images.shape[-2]
    for k in (1, 2, 3) if square else (2,):  # a quarter turn of a non-square image would change its shape
        out = torch.where((turns == k)[:, None, None, None], torch.rot90(images, k, dims=(2, 3)), out)
    return torch.where(flips[:, None, None, None], out.flip(-1), out)


def batch_indices(n: int, batch_size: int, generator: torch.Generator | None, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    """Index batches for one epoch; shuffled when a generator is given, sharded across ranks like DistributedSampler."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    if world_size > 1:
        padded = math.ceil(n / world_size) * world_size
        order = torch.cat([order, order[: padded - n]])[rank::world_size]
    return list(order.split(batch_size))


def group_batches(data, batch_size: int, generator: torch.Generator | None, rank: int = 0,
                  world_size: int = 1) -> list[tuple[int, torch.Tensor]]:
    """(group, index) batches of one epoch: each image-size group batched apart (``batch_indices``), then the batches of
    all groups shuffled together with the same generator; one group gives exactly ``batch_indices``' batches."""
    batches = [(g, index) for g, group in enumerate(data.groups)
               for index in batch_indices(len(group.labels), batch_size, generator, rank, world_size)]
    if generator is None or len(data.groups) == 1:
        return batches
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
