"""Per-epoch validation of mae resnet18 (300 random images): with vs without the embedding pass, interleaved.

    .venv/bin/python benchmarks/eval_embeddings.py

A masked objective's embeddings need a second, unmasked encoder pass; the per-epoch validation
(``evaluate(..., embed=False)``) skips it; the final evaluation keeps it.
"""

from __future__ import annotations

import time

import torch

from dlfm.training import TrainConfig
from dlfm.training.loop import SplitTensors, build_context, evaluate

CLASSES = ("no_sub", "cdm", "axion")


def main(repeats: int = 3) -> None:
    torch.manual_seed(0)
    ctx = build_context(TrainConfig(objective="mae", encoder="resnet18", batch_size=64), len(CLASSES), 10, progress=False)
    data = SplitTensors(torch.rand(300, 1, 64, 64), torch.randint(0, len(CLASSES), (300,)))
    ctx.mean_image = data.images.mean(0, keepdim=True)
    ctx.model.decoder.set_baseline(ctx.mean_image)
    evaluate(ctx, data, CLASSES, "val")  # warm-up
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for embed in (True, False):
            started = time.perf_counter()
            evaluate(ctx, data, CLASSES, "val", embed=embed)
            seconds[embed].append(time.perf_counter() - started)
    with_embed, without = min(seconds[True]), min(seconds[False])
    print(f"with embeddings {with_embed:.2f} s, metrics only {without:.2f} s (best of {repeats}): {with_embed / without:.2f}x")


if __name__ == "__main__":
    main()
