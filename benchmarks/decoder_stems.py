"""Train-step cost of the reconstructing objectives per ResNet18 stem, at 64 px on this CPU.

Every stem decodes from a stride-8 map (layer2 with `imagenet`, layer3 with `stride2`, layer4 with
`small`); they differ in how much the encoder computes. Options are interleaved, best of repeats.

    .venv/bin/python benchmarks/decoder_stems.py [--objective mae] [--batch 64] [--steps 3] [--repeats 3]

Prints ms per train step (forward + backward + AdamW) and images/s for each stem.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from dlfm.models import build_model  # noqa: E402
from dlfm.models.encoders import RESNET_STEMS  # noqa: E402
from dlfm.training.objectives import Objective  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="mae")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stems", default=",".join(RESNET_STEMS))
    args = parser.parse_args()
    torch.manual_seed(0)
    images, labels = torch.rand(args.batch, 1, 64, 64), torch.zeros(args.batch, dtype=torch.long)
    setups = {}
    for stem in args.stems.split(","):
        model, objective = build_model(args.objective, "resnet18", 3, {"stem": stem}), Objective(args.objective)
        setups[stem] = (model, objective, torch.optim.AdamW(model.parameters(), 1e-3))
    best = {stem: float("inf") for stem in setups}
    for _ in range(args.repeats):
        for stem, (model, objective, optimizer) in setups.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                mask = objective.make_mask(images, None)
                loss, _ = objective(model(images, mask), images, labels, mask)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            best[stem] = min(best[stem], (time.perf_counter() - started) / args.steps)
    for stem, seconds in best.items():
        print(f"{args.objective} resnet18 stem={stem:9s} {seconds * 1000:7.0f} ms/step  {args.batch / seconds:6.0f} images/s")


if __name__ == "__main__":
    main()
