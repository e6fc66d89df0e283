"""One training run's checkpointed encoder (e.g. a pretraining run stopped part-way), read by the transfer matrix's
own frozen cells (evaluate's converged probe: budgets 100 and all, 3 seeds) beside a random encoder (issue 27 item 5).

    python benchmarks/probe_checkpoint.py <run_id> [--target model_i] [--resize_px 74]

Reads the run's ``checkpoints/last.pt`` (weights-only) from the tracking store and the target's held-out set
(sim_seed 1, 600/30/300, as benchmarks/transfer_matrix.sh at CPU size); prints one line per arm and budget.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from dlfm.evaluation import TASKS, EvaluateConfig, run_grid
from dlfm.models import create_encoder
from dlfm.stages.common import resolve_dataset
from dlfm.tracking.checkpoints import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--target", default="model_i")
    parser.add_argument("--resize_px", type=int, default=0, help="area-resample the target's images to this side first "
                        "(Model I 150 px at 0.05 arcsec/px -> 74 px is Model II's 0.101 arcsec/px); 0: native")
    args = parser.parse_args()
    state = load_checkpoint(args.run_id)
    config = state["config"]
    encoder = create_encoder(config["encoder"])
    encoder.load_state_dict({k[len("encoder."):]: v for k, v in state["model"].items() if k.startswith("encoder.")})
    print(f"run {args.run_id}: epoch {state['epoch']}, pretrain_mix {config.get('pretrain_mix')}", flush=True)
    dataset = resolve_dataset(args.target, 600, 30, 300, seed=1)
    if args.resize_px:
        images = torch.from_numpy(np.ascontiguousarray(dataset.images))
        resized = torch.nn.functional.interpolate(images, size=(args.resize_px,) * 2, mode="area").numpy()
        dataset = dataclasses.replace(dataset, images=resized, manifest={**dataset.manifest, "image_size": args.resize_px})
    grid = EvaluateConfig(tasks="classification", classification_dataset=args.target, budgets="100,all", seeds="0,1,2",
                          arms="pretrained-frozen,random-frozen")
    results = run_grid(grid, {"classification": TASKS["classification"].load(dataset, args.target)}, encoder,
                       torch.device("cpu"))
    for arm in ("pretrained-frozen", "random-frozen"):
        for budget in (100, "all"):
            aucs = [r.metrics["test/macro_auc"] for r in results if r.cell.arm == arm and r.cell.budget == budget]
            print(f"evaluate's probe, {arm} {budget}: {np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
