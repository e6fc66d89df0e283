"""Is it the encoder or the probe? One training run's checkpointed encoder, read by the transfer matrix's own
frozen cells (evaluate's linear head: budgets 100 and all, 3 seeds, 8 epochs at batch 128, ``--min_steps``) and by
a converged logistic regression (scikit-learn, all labels), beside a random encoder (issue 27 item 5).

    python benchmarks/probe_checkpoint.py <run_id> [--target model_i] [--min_steps 50]

Reads the run's ``checkpoints/last.pt`` (weights-only) from the tracking store and the target's held-out set
(sim_seed 1, 600/30/300, as benchmarks/transfer_matrix.sh at CPU size); prints one line per arm and budget.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from dlfm.evaluation import TASKS, EvaluateConfig, run_grid
from dlfm.evaluation.embedding import embed, random_encoder_like
from dlfm.models import create_encoder
from dlfm.stages.common import resolve_dataset
from dlfm.tracking.checkpoints import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--target", default="model_i")
    parser.add_argument("--min_steps", type=int, default=50)
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
                          arms="pretrained-frozen,random-frozen", epochs=8, batch_size=128, min_steps=args.min_steps)
    results = run_grid(grid, {"classification": TASKS["classification"].load(dataset, args.target)}, encoder,
                       torch.device("cpu"))
    for arm in ("pretrained-frozen", "random-frozen"):
        for budget in (100, "all"):
            aucs = [r.metrics["test/macro_auc"] for r in results if r.cell.arm == arm and r.cell.budget == budget]
            print(f"evaluate head (min_steps {args.min_steps}) {arm} {budget}: {np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f}",
                  flush=True)
    for name, model in (("pretrained", encoder), ("random seed 0", random_encoder_like(encoder, 0))):
        train, test = (embed(model, dataset.get_images(split), torch.device("cpu")) for split in ("train", "test"))
        scaler = StandardScaler().fit(train)
        probe = LogisticRegression(max_iter=5000).fit(scaler.transform(train), dataset.get_labels("train"))
        auc = roc_auc_score(dataset.get_labels("test"), probe.predict_proba(scaler.transform(test)), multi_class="ovr")
        print(f"converged logistic regression, all labels, {name}: {auc:.3f}", flush=True)


if __name__ == "__main__":
    main()
