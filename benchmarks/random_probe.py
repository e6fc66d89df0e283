"""The linear probe of a randomly initialised encoder: the floor a pretrained encoder's `test/probe_macro_auc` must clear.

It builds the encoder with random weights (seeded, as the stages build it), embeds the labelled set that a pretraining
stage probes (resolved as the stage resolves `dataset` with its sim_n_* sizes, so the same cached images), fits the same
logistic-regression probe (train -> test) and prints test macro AUC per seed with the mean ± sd.

    python benchmarks/random_probe.py --encoder vit_small --patch_size 8 --sim_n 1500,300,300 --seeds 0,1,2

(the probe of benchmarks/vit_mae_learns.sh's mae runs: dataset model_ii, sim_n_train/val/test 1500/300/300.)
"""

from __future__ import annotations

import argparse
import statistics

import torch

from dlfm.stages.common import resolve_dataset, split_tensors
from dlfm.training import TrainConfig
from dlfm.training.evaluate import evaluate, linear_probe
from dlfm.training.loop import build_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="vit_small")
    parser.add_argument("--patch_size", type=int, default=8)
    parser.add_argument("--dataset", default="model_ii")
    parser.add_argument("--sim_n", default="1500,300,300", help="sim_n_train,sim_n_val,sim_n_test of the stage's probe set")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    n_train, n_val, n_test = (int(n) for n in args.sim_n.split(","))
    dataset = resolve_dataset(args.dataset, n_train, n_val, n_test)
    splits = {name: split_tensors(dataset, name) for name in ("train", "test")}
    aucs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        # supervised: the encoder alone (no decoder); evaluate() embeds the unmasked image, as the stages' probe does
        config = TrainConfig(objective="supervised", encoder=args.encoder, patch_size=args.patch_size, seed=seed,
                             device=args.device, batch_size=128)
        ctx = build_context(config, len(dataset.class_names), 1, progress=False)
        with torch.no_grad():
            outputs = {name: evaluate(ctx, splits[name], dataset.class_names, name) for name in ("train", "test")}
        probed = linear_probe(outputs["train"], {"test": outputs["test"]}, dataset.class_names, seed)
        aucs.append(probed["test"].metrics["test/macro_auc"])
        print(f"seed {seed}: random {args.encoder} probe test macro AUC {aucs[-1]:.3f}", flush=True)
    spread = statistics.stdev(aucs) if len(aucs) > 1 else float("nan")
    print(f"random {args.encoder}: {statistics.mean(aucs):.3f} ± {spread:.3f} over {len(aucs)} seeds "
          f"({args.dataset} {n_train}/{n_val}/{n_test}, linear probe train -> test)")


if __name__ == "__main__":
    main()
