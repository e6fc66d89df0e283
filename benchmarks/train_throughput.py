"""Training throughput: fp32 vs bf16 autocast, and the bare loop vs the tracked stage, interleaved in one run.

Two comparisons, each a ratio taken from interleaved repeats so that a burst of load on a shared
machine hits both sides alike:

1. precision: ResNet18 train steps (1×64×64, batch 64 by default) under ``autocast_for(cpu, "fp32")``
   and ``autocast_for(cpu, "bf16")`` (the contexts a Runtime gets): img/s and CPU-seconds per 1000 images;
2. tracking: ``dlfm.training.fit`` alone (the bare loop) vs the same ``fit`` inside a tracked stage
   run (system metrics on, per-epoch metrics and checkpoint artifacts on a temporary SQLite store,
   as ``stages.train`` does): img/s, and the tracking overhead in wall time and in CPU-seconds
   (``time.process_time``: every thread of this process, so MLflow's own threads count).

    .venv/bin/python benchmarks/train_throughput.py [--steps 6] [--n 256] [--epochs 1] [--repeats 3] [--threads 2]

On a CPU without AMX/avx512_bf16 bf16 is emulated and slower: that is why precision=auto keeps fp32 there.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from dlfm.models import build_model  # noqa: E402
from dlfm.training import TrainConfig, fit  # noqa: E402
from dlfm.training.context import SplitTensors  # noqa: E402
from dlfm.training.objectives import Objective  # noqa: E402
from dlfm.training.runtime import autocast_for, cpu_has_bf16, make_runtime  # noqa: E402

CLASSES = ("no_sub", "cdm", "axion")
CPU = torch.device("cpu")


def make_splits(n: int, size: int = 64) -> dict[str, SplitTensors]:
    generator = torch.Generator().manual_seed(0)
    make = lambda count: SplitTensors(torch.rand(count, 1, size, size, generator=generator), torch.arange(count) % 3)  # noqa: E731
    return {"train": make(n), "val": make(n // 4), "test": make(n // 4)}


class StepBench:
    """One model, optimizer and batch per precision; ``run(k)`` times k train steps (wall s, CPU s)."""

    def __init__(self, precision: str, batch_size: int, objective: str = "supervised"):
        torch.manual_seed(0)
        self.model = build_model(objective, "resnet18", 3)
        self.objective = Objective(objective, label_smoothing=0.1)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.autocast = autocast_for(CPU, precision)
        self.images, self.labels = torch.rand(batch_size, 1, 64, 64), torch.arange(batch_size) % 3

    def run(self, steps: int) -> tuple[float, float]:
        self.model.train()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            with self.autocast():
                loss, _ = self.objective(self.model(self.images), self.images, self.labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - wall, time.process_time() - cpu


def bare_fit(config: TrainConfig, splits) -> tuple[float, float]:
    """``fit`` with no tracking at all (what tune workers and other ranks run). (wall s, CPU s)"""
    wall, cpu = time.perf_counter(), time.process_time()
    fit(config, splits, CLASSES, progress=False, runtime=make_runtime("cpu", config.precision))
    return time.perf_counter() - wall, time.process_time() - cpu


def tracked_fit(config: TrainConfig, splits) -> tuple[float, float]:
    """The same ``fit`` inside a tracked stage run: params, system metrics, per-epoch metrics and checkpoints."""
    from dlfm import tracking
    from dlfm.tracking import checkpoints

    wall, cpu = time.perf_counter(), time.process_time()
    with tracking.stage_run("multitask", "benchmark", "benchmark", system_metrics=True) as run_id:
        tracking.log_params(config.to_dict())

        def on_epoch_end(epoch, metrics, make_checkpoint):
            checkpoints.log_checkpoint(make_checkpoint(), run_id)
            tracking.log_metrics(metrics, step=epoch)

        fit(config, splits, CLASSES, on_epoch_end=on_epoch_end, progress=False, runtime=make_runtime("cpu", config.precision))
    return time.perf_counter() - wall, time.process_time() - cpu


def best(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """The fastest repeat by wall time (least disturbed by other load), with its CPU time."""
    return min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="train steps per precision sample")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--n", type=int, default=256, help="train images of the fit comparison (val = test = n/4)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--skip", choices=("precision", "tracking"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16 (AMX/avx512_bf16): {cpu_has_bf16()}, load average {os.getloadavg()[0]:.2f}")

    if args.skip != "precision":
        benches = {p: StepBench(p, args.batch_size) for p in ("fp32", "bf16")}
        for bench in benches.values():
            bench.run(1)  # warm-up: kernels, allocator
        samples = {p: [] for p in benches}
        for repeat in range(args.repeats):
            for p in (("fp32", "bf16") if repeat % 2 == 0 else ("bf16", "fp32")):  # alternate who goes first
                samples[p].append(benches[p].run(args.steps))
        images = args.steps * args.batch_size
        print(f"\ntrain step, resnet18 1x64x64, batch {args.batch_size}, {args.steps} steps x {args.repeats} interleaved repeats")
        for p, rows in samples.items():
            wall, cpu = best(rows)
            print(f"  {p}: {images / wall:7.1f} img/s   {1000 * cpu / images:6.2f} CPU-s per 1000 img")
        (w32, c32), (w16, c16) = best(samples["fp32"]), best(samples["bf16"])
        print(f"  bf16/fp32 speed-up: {w32 / w16:.2f}x wall, {c32 / c16:.2f}x per CPU-second")

    if args.skip != "tracking":
        config = TrainConfig(objective="multitask", encoder="resnet18", epochs=args.epochs, patience=args.epochs,
                             device="cpu", precision="fp32")
        splits = make_splits(args.n)
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
            os.chdir(tmp)
            bare_fit(config, splits)  # warm-up, and lazy imports on both sides
            tracked_fit(config, splits)
            bare, tracked = [], []
            for repeat in range(args.repeats):
                order = ((bare, lambda: bare_fit(config, splits)), (tracked, lambda: tracked_fit(config, splits)))
                for rows, measure in (order if repeat % 2 == 0 else order[::-1]):
                    rows.append(measure())
        images = args.n * args.epochs
        (bw, bc), (tw, tc) = best(bare), best(tracked)
        print(f"\nmultitask fit, resnet18, {args.n} train images x {args.epochs} epoch(s) (+ val/test evaluation), "
              f"{args.repeats} interleaved repeats")
        print(f"  bare fit      : {images / bw:7.1f} img/s   {bw:6.2f} s wall   {bc:6.2f} CPU-s")
        print(f"  tracked stage : {images / tw:7.1f} img/s   {tw:6.2f} s wall   {tc:6.2f} CPU-s")
        print(f"  tracking overhead: {tw - bw:+.2f} s wall ({100 * (tw - bw) / bw:+.1f} %), "
              f"{tc - bc:+.2f} CPU-s ({100 * (tc - bc) / bc:+.1f} %)")
        print(f"  load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
