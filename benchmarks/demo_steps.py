"""Where a demo-size training step's CPU time goes, per phase, and NCHW vs channels_last vs fused AdamW.

Demo size: ResNet18, 64 px, batch 64, 1200 train / 300 val images, fp32 (the `precision=auto` of a CPU without
native bf16). CPU-seconds (``time.process_time``) with ``--threads`` torch threads (default 1), so the load of a
shared box counts less than in wall time. The phase timers wrap the same calls ``train_one_epoch`` makes.

    python benchmarks/demo_steps.py [--steps 6] [--threads 1] [--layouts]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from dlfm.training.config import TrainConfig  # noqa: E402
from dlfm.training.batches import augment_batch, batch_indices  # noqa: E402
from dlfm.training.context import SplitTensors  # noqa: E402
from dlfm.training.evaluate import evaluate  # noqa: E402
from dlfm.training.loop import build_context  # noqa: E402
from dlfm.training.runtime import make_runtime  # noqa: E402

OBJECTIVES = ("autoencoder", "mae", "supervised", "multitask")


def context(objective: str, train: SplitTensors, channels_last: bool):
    runtime = make_runtime("cpu", "fp32")
    runtime.channels_last = channels_last
    config = TrainConfig(objective=objective, encoder="resnet18", batch_size=64, epochs=4, device="cpu", precision="fp32")
    ctx = build_context(config, 3, 19, runtime, progress=False)
    ctx.mean_image = train.images.mean(0, keepdim=True)
    if ctx.model.decoder is not None:
        ctx.model.decoder.set_baseline(ctx.mean_image)
    return ctx


def phases(ctx, train: SplitTensors, steps: int) -> dict[str, float]:
    """CPU-s per step of each phase, over ``steps`` steps after one warm-up step."""
    ctx.model.train(), ctx.objective.train()
    totals = dict.fromkeys(("data", "augment_mask", "forward_loss", "backward", "clip", "optimizer", "sums"), 0.0)
    for step, index in enumerate(batch_indices(len(train.labels), 64, ctx.generator)[: steps + 1]):
        marks = [time.process_time()]
        images, labels = train.images[index], train.labels[index]
        marks.append(time.process_time())
        images = augment_batch(images, ctx.generator)
        mask = ctx.objective.make_mask(images, ctx.generator)
        marks.append(time.process_time())
        loss, parts = ctx.objective(ctx.forward_model(images, mask), images, labels, mask)
        marks.append(time.process_time())
        ctx.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.process_time())
        nn.utils.clip_grad_norm_(ctx.model.parameters(), 1.0)
        marks.append(time.process_time())
        ctx.optimizer.step(), ctx.scheduler.step()
        marks.append(time.process_time())
        torch.stack([loss.detach(), *parts.values()]).double().sum()
        marks.append(time.process_time())
        if step:  # the first step warms up kernels and the allocator
            for name, start, end in zip(totals, marks, marks[1:]):
                totals[name] += (end - start) / steps
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layouts", action="store_true", help="also NCHW vs channels_last vs fused AdamW, interleaved, best of 2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f}", flush=True)
    generator = torch.Generator().manual_seed(0)
    train = SplitTensors(torch.rand(1200, 1, 64, 64, generator=generator), torch.arange(1200) % 3)
    val = SplitTensors(torch.rand(300, 1, 64, 64, generator=generator), torch.arange(300) % 3)
    for objective in OBJECTIVES:
        ctx = context(objective, train, channels_last=False)  # the phase profile of the NCHW path, as before issue 20
        per_phase = phases(ctx, train, args.steps)
        step = sum(per_phase.values())
        started = time.process_time()
        evaluate(ctx, val, ("no_sub", "cdm", "axion"), "val", embed=False)
        val_pass = time.process_time() - started
        print(f"{objective:12s} train step {step:.3f} CPU-s ("
              + ", ".join(f"{name} {100 * value / step:.0f}%" for name, value in per_phase.items())
              + f"); val pass (300 img) {val_pass:.2f} CPU-s; per epoch ~ {19 * step + val_pass:.1f} CPU-s", flush=True)
    if args.layouts:
        for objective in OBJECTIVES:
            best = {}
            for _repeat in range(2):
                for label, channels_last, fused in (("NCHW", False, False), ("channels_last", True, False), ("fused AdamW", False, True)):
                    ctx = context(objective, train, channels_last)
                    if fused:
                        ctx.optimizer = torch.optim.AdamW(ctx.model.parameters(), lr=ctx.config.lr,
                                                          weight_decay=ctx.config.weight_decay, fused=True)
                    value = sum(phases(ctx, train, max(2, args.steps // 2)).values())
                    best[label] = min(best.get(label, value), value)
            print(f"{objective:12s} " + ", ".join(f"{label} {value:.3f}" for label, value in best.items()) + " CPU-s/step", flush=True)


if __name__ == "__main__":
    main()
