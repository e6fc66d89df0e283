"""Throughput of the tracked multitask stage against a bare PyTorch loop, measured in one run.

Both train the same model (same seed) on the same images for the same epochs, each epoch a train
pass plus a validation forward pass. The tracked side is `dlfm.training.fit` inside an MLflow
run with system metrics on and per-epoch metric logging to a temporary SQLite store.

    .venv/bin/python benchmarks/train_overhead.py [--encoder resnet18] [--n 256] [--epochs 2] [--repeats 3]

Prints images/s of each and the ratio tracked/bare (aim: >= 0.98).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from dlfm.models import build_model  # noqa: E402
from dlfm.training import TrainConfig, fit  # noqa: E402
from dlfm.training.loop import SplitTensors, augment_batch, batch_indices  # noqa: E402
from dlfm.training.runtime import seed_everything  # noqa: E402

CLASSES = ("no_sub", "cdm", "axion")
SYSTEM_METRICS = os.environ.get("DLFM_BENCH_SYSTEM_METRICS", "true") == "true"


def make_splits(n: int, size: int = 64) -> dict[str, SplitTensors]:
    generator = torch.Generator().manual_seed(0)
    make = lambda count: SplitTensors(torch.rand(count, 1, size, size, generator=generator), torch.arange(count) % 3)  # noqa: E731
    return {"train": make(n), "val": make(n // 4), "test": make(n // 4)}


def bare_loop(config: TrainConfig, splits) -> float:
    """A plain PyTorch loop: train epoch + val forward per epoch. Returns seconds."""
    generator = seed_everything(config.seed)
    model = build_model("multitask", config.encoder, 3, config.encoder_kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    train, val = splits["train"], splits["val"]
    started = time.perf_counter()
    for _ in range(config.epochs):
        model.train()
        for index in batch_indices(len(train.labels), config.batch_size, generator):
            images = augment_batch(train.images[index], generator)
            out = model(images)
            loss = F.cross_entropy(out.logits, train.labels[index], label_smoothing=0.1) + config.recon_weight * F.mse_loss(out.reconstruction, images)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for index in batch_indices(len(val.labels), 128, None):
                model(val.images[index])
    return time.perf_counter() - started


def tracked_fit(config: TrainConfig, splits) -> float:
    """dlfm.fit inside a tracked run (system metrics + per-epoch logging). Seconds until the last epoch is logged."""
    from dlfm import tracking

    marks = {}

    def on_epoch_end(epoch, metrics, make_checkpoint):
        tracking.log_metrics(metrics, step=epoch)
        marks["end"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.chdir(tmp)
        with tracking.stage_run("multitask", "benchmark", "benchmark", system_metrics=SYSTEM_METRICS):
            tracking.log_params(config.to_dict())
            started = time.perf_counter()
            fit(config, splits, CLASSES, on_epoch_end=on_epoch_end, progress=False)
    return marks["end"] - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--n", type=int, default=256, help="train images (val = n/4)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = TrainConfig(objective="multitask", encoder=args.encoder, epochs=args.epochs, patience=args.epochs, device="cpu")
    splits = make_splits(args.n)
    images = args.n * args.epochs
    bare_loop(config, splits)  # warm-up: kernels, allocator, lazy imports
    # Interleaved repeats, best of each, so a burst of load on the machine hits both sides alike.
    bare, tracked = float("inf"), float("inf")
    for _ in range(args.repeats):
        bare = min(bare, bare_loop(config, splits))
        tracked = min(tracked, tracked_fit(config, splits))
    print(f"bare PyTorch loop : {images / bare:8.1f} img/s ({bare:.1f} s)")
    print(f"tracked dlfm stage: {images / tracked:8.1f} img/s ({tracked:.1f} s)")
    print(f"ratio tracked/bare: {bare / tracked:.3f}  (aim >= 0.98)")


if __name__ == "__main__":
    main()
