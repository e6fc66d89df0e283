"""Transfer speed: heads trained on cached embeddings vs re-running the frozen encoder every epoch.

The seed notebook pushed every image through the frozen encoder in every epoch. dlfm embeds the
dataset once per encoder and trains the head on the cached embeddings. Both sides train the same
head for the same epochs on the same data.

    .venv/bin/python benchmarks/transfer.py [--encoder resnet18] [--n 400] [--epochs 20]

Prints seconds of each, and the speed-up (aim: >= 10x).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from dlfm.models import create_encoder  # noqa: E402
from dlfm.models.heads import RegressionHead  # noqa: E402
from dlfm.evaluation.fit import Schedule, fit  # noqa: E402
from dlfm.evaluation.embedding import embed  # noqa: E402


def per_epoch_encoder(encoder, images, targets, epochs: int, batch_size: int) -> float:
    """The seed's way: frozen encoder in the loop of every epoch. Returns seconds."""
    torch.manual_seed(0)
    head = RegressionHead(encoder.embed_dim, targets.shape[1])
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    encoder.eval()
    x, y = torch.from_numpy(images), torch.from_numpy(targets).float()
    started = time.perf_counter()
    for _ in range(epochs):
        for index in torch.randperm(len(x)).split(batch_size):
            with torch.no_grad():
                features = encoder(x[index])
            loss = nn.functional.mse_loss(head(features), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def cached(encoder, images, targets, epochs: int, batch_size: int) -> float:
    """dlfm: embed once, then train the head on the cache. Returns seconds (embedding included)."""
    started = time.perf_counter()
    features = torch.from_numpy(embed(encoder, images, torch.device("cpu")))
    torch.manual_seed(0)
    head = RegressionHead(encoder.embed_dim, targets.shape[1])
    schedule = Schedule(epochs=epochs, min_steps=0, batch_size=batch_size, weight_decay=0.0)
    fit(head, [{"params": list(head.parameters()), "lr": 1e-3}], features, torch.from_numpy(targets).float(),
        nn.functional.mse_loss, schedule, 0, torch.device("cpu"))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.random((args.n, 1, 64, 64), dtype=np.float32)
    targets = rng.normal(size=(args.n, 7))
    encoder = create_encoder(args.encoder)
    baseline = per_epoch_encoder(encoder, images, targets, args.epochs, args.batch_size)
    ours = cached(encoder, images, targets, args.epochs, args.batch_size)
    print(f"encoder every epoch (seed): {baseline:7.2f} s for {args.epochs} epochs")
    print(f"embedding cache (dlfm)    : {ours:7.2f} s (embedding once included)")
    print(f"speed-up: {baseline / ours:.1f}x  (aim >= 10x; grows with epochs)")


if __name__ == "__main__":
    main()
