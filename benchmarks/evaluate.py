"""Evaluate grid cost: frozen arms on the embedding cache vs the naive loop that re-embeds every cell.

dlfm's grid embeds each image once per encoder (the pretrained one, and one random encoder per
seed). The naive loop pushes the whole pool through the frozen encoder again for every
(task, budget, arm, seed) cell. Both run the very same grid code (``EmbeddingCache(enabled=...)``),
the same heads, subsets and seeds, on the same simulated-size random images.

    .venv/bin/python benchmarks/evaluate.py [--encoder resnet18] [--n_train 600] [--n_test 300]
        [--budgets 10,50,all] [--seeds 0,1] [--epochs 5]

Prints the grid's wall time against the naive loop's, and the images each embedded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dlfm.evaluation import EmbeddingCache, EvaluateConfig, run_grid  # noqa: E402
from dlfm.evaluation.tasks import Split, TaskData  # noqa: E402
from dlfm.models import create_encoder  # noqa: E402


def synthetic_task(n_train: int, n_test: int) -> TaskData:
    """A 3-class task of random 64×64 images: the cost does not depend on the pixels."""
    rng = np.random.default_rng(0)
    split = lambda n: Split(rng.random((n, 1, 64, 64), dtype=np.float32), np.arange(n) % 3)  # noqa: E731
    return TaskData("classification", "synthetic", "-", split(n_train), split(n_test), ("no_sub", "cdm", "axion"), {})


def timed(config, tasks, encoder, cached: bool) -> tuple[float, int]:
    cache = EmbeddingCache(torch.device("cpu"), enabled=cached)
    started = time.perf_counter()
    run_grid(config, tasks, encoder, torch.device("cpu"), cache=cache)
    return time.perf_counter() - started, sum(cache.embedded.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--n_train", type=int, default=600)
    parser.add_argument("--n_test", type=int, default=300)
    parser.add_argument("--budgets", default="10,50,all")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    config = EvaluateConfig(tasks="classification", budgets=args.budgets, seeds=args.seeds, epochs=args.epochs,
                            min_steps=20, arms="pretrained-frozen,random-frozen")
    tasks = {"classification": synthetic_task(args.n_train, args.n_test)}
    torch.manual_seed(0)
    encoder = create_encoder(args.encoder)
    cells = len(config.budget_list) * len(config.seed_list) * 2
    naive, naive_images = timed(config, tasks, encoder, cached=False)
    ours, our_images = timed(config, tasks, encoder, cached=True)
    print(f"frozen arms, {cells} cells ({args.encoder}, pool {args.n_train}+{args.n_test} images, budgets {args.budgets}, "
          f"seeds {args.seeds}):")
    print(f"naive loop (re-embeds every cell): {naive:7.2f} s, {naive_images} images embedded")
    print(f"dlfm grid (embedding cache)      : {ours:7.2f} s, {our_images} images embedded")
    print(f"speed-up: {naive / ours:.1f}x")


if __name__ == "__main__":
    main()
