"""The linear probe of a randomly initialised encoder: the floor a pretrained encoder's `test/probe_macro_auc` must clear.

It builds the encoder with random weights (seeded as evaluate's random-frozen arm), embeds the labelled set that a
pretraining stage probes (resolved as the stage resolves `dataset` with its sim_n_* sizes, so the same cached images),
fits the stages' own probe (``linear_probe``: logistic regression, train -> test) and prints test macro AUC per seed
with the mean ± sd.

    python benchmarks/random_probe.py --encoder vit_small --sim_n 1500,300,300 --seeds 0,1,2 [--precision bf16]

A random ViT's probe depends on the precision of its embeddings (vit_small, seed 0: 0.878 fp32, 0.752 bf16), so
compare with a stage's probe at the precision that stage ran in (a CUDA stage at precision=auto: bf16).

(the probe of benchmarks/vit_mae_learns.sh's mae runs: dataset model_ii, sim_n_train/val/test 1500/300/300.)
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch

from dlfm.evaluation.embedding import embed, random_encoder_like
from dlfm.models import create_encoder
from dlfm.stages.common import resolve_dataset
from dlfm.training.context import EvalOutput
from dlfm.training.evaluate import linear_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="vit_small")
    parser.add_argument("--dataset", default="model_ii")
    parser.add_argument("--sim_n", default="1500,300,300", help="sim_n_train,sim_n_val,sim_n_test of the stage's probe set")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="embed under bf16 autocast to match a stage that probed in bf16 (a CUDA stage's auto)")
    args = parser.parse_args()
    n_train, n_val, n_test = (int(n) for n in args.sim_n.split(","))
    dataset = resolve_dataset(args.dataset, n_train, n_val, n_test)
    template, device = create_encoder(args.encoder), torch.device(args.device)
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.precision == "bf16"
                else contextlib.nullcontext)
    aucs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        encoder = random_encoder_like(template, seed)
        train, test = (EvalOutput({}, None, dataset.get_labels(split), embed(encoder, dataset.get_images(split), device, autocast=autocast))
                       for split in ("train", "test"))
        probed = linear_probe(train, {"test": test}, dataset.class_names, seed)
        aucs.append(probed["test"].metrics["test/macro_auc"])
        print(f"seed {seed}: random {args.encoder} probe test macro AUC {aucs[-1]:.3f}", flush=True)
    spread = statistics.stdev(aucs) if len(aucs) > 1 else float("nan")
    print(f"random {args.encoder}: {statistics.mean(aucs):.3f} ± {spread:.3f} over {len(aucs)} seeds "
          f"({args.dataset} {n_train}/{n_val}/{n_test}, {args.precision} embeddings, linear probe train -> test)")


if __name__ == "__main__":
    main()
