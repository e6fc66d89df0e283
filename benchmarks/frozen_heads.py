"""Frozen heads before and after: evaluate's converged probe against the SGD loop it replaced, on the same embeddings.

For one registered encoder and one task, each seed's label subset is read by the pretrained encoder and by that
seed's random encoder through (a) the probe (``dlfm.training.probe``: logistic or ridge regression, penalty by
cross-validation on the subset) and (b) the task's head trained by the shared loop (``fit``: AdamW lr 1e-3, cosine,
batch 32, 20 epochs and at least ``--steps`` steps), as evaluate's frozen arms did before the probe. Prints the
headline metric, mean ± sd over seeds, per reader and budget, and the pretrained − random margin of each.

    python benchmarks/frozen_heads.py --encoder_uri models:/dlfm-encoder@production --task classification \\
        [--dataset model_ii] [--budgets 10,50,all] [--steps 50,200,2000] [--sim_n 900,150,300]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from dlfm.evaluation import TASKS
from dlfm.evaluation.embedding import random_encoder_like
from dlfm.evaluation.fit import Schedule, fit, predict
from dlfm.evaluation.grid import EmbeddingCache, head_init_seed
from dlfm.stages.common import resolve_dataset
from dlfm.tracking import configure_tracking, registry


def loop_head(task, encoder, data, features, targets, index, seed, steps):
    """The pre-probe frozen arm: the task's head trained by the shared loop on the cached embeddings."""
    torch.manual_seed(head_init_seed(seed))
    head = task.head(encoder, data)
    schedule = Schedule(epochs=20, min_steps=steps, batch_size=32, weight_decay=1e-4)
    fit(head, [{"params": list(head.parameters()), "lr": 1e-3}], torch.from_numpy(features["train"][index]),
        targets.values, task.loss, schedule, seed, torch.device("cpu"))
    return predict(head, features["test"], torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder_uri", required=True)
    parser.add_argument("--task", default="classification", choices=("classification", "regression"))
    parser.add_argument("--dataset", default="")
    parser.add_argument("--budgets", default="10,50,all")
    parser.add_argument("--steps", default="50,200,2000")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sim_n", default="900,150,300", help="train,val,test sizes of a preset not simulated yet (sim_seed 1)")
    args = parser.parse_args()
    configure_tracking()
    encoder = registry.load_registered_encoder(args.encoder_uri)
    task = TASKS[args.task]
    spec = args.dataset or ("model_ii" if args.task == "classification" else "regression")
    data = task.load(resolve_dataset(spec, *(int(n) for n in args.sim_n.split(",")), seed=1), spec)
    cache = EmbeddingCache(torch.device("cpu"))
    readers = ["probe"] + [f"loop {steps} steps" for steps in args.steps.split(",")]
    rows = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        encoders = {"pretrained": encoder, "random": random_encoder_like(encoder, seed)}
        for budget in [b if b == "all" else int(b) for b in args.budgets.split(",")]:
            index = task.subset(data, budget, seed)
            targets = task.targets(data, index)
            for arm, model in encoders.items():
                features = cache.features(data, arm if arm == "pretrained" else f"random-{seed}", model)
                outputs = {"probe": task.probe(features["train"][index], targets, seed).outputs(features["test"])}
                for steps in args.steps.split(","):
                    outputs[f"loop {steps} steps"] = loop_head(task, model, data, features, targets, index, seed, int(steps))
                for reader, raw in outputs.items():
                    value = task.metrics(task.keep(task.decode(raw, targets), data), data)[task.headline]
                    rows.setdefault((reader, budget, arm), []).append(value)
    print(f"{args.encoder_uri} on {spec} ({task.headline}, mean ± sd over seeds {args.seeds})\n")
    print("| reader | budget | pretrained-frozen | random-frozen | pretrained − random |\n|---|---|---|---|---|")
    for reader in readers:
        for budget in [b if b == "all" else int(b) for b in args.budgets.split(",")]:
            pre, ran = np.array(rows[(reader, budget, "pretrained")]), np.array(rows[(reader, budget, "random")])
            fmt = lambda v: f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"  # noqa: E731
            print(f"| {reader} | {budget} | {fmt(pre)} | {fmt(ran)} | {fmt(pre - ran)} |")


if __name__ == "__main__":
    main()
