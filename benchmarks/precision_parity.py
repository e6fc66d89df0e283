"""bf16 vs fp32 accuracy: val/test macro AUC of the real training stage, several seeds, interleaved.

    python benchmarks/precision_parity.py                       # demo size: multitask resnet18, 1200/300/300 images, 4 epochs, seeds 0 1 2
    python benchmarks/precision_parity.py --objective supervised --seeds 0 1 2 3 4

Each (seed, precision) pair is one ``run_training_stage`` run on a throwaway SQLite tracking store;
seeds run in turn and both precisions of a seed back to back, so a burst of load hits both alike.
Parity (issue 15): bf16's mean val/macro_auc lies within one sd (over the seeds) of fp32's.
On a CPU without AMX/avx512_bf16 bf16 is emulated and many times slower: run this where it is native.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="multitask")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--n_train", type=int, default=1200)
    parser.add_argument("--n_val", type=int, default=300)
    parser.add_argument("--n_test", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()

    import torch

    from dlfm.simulation import SimulationConfig, simulate_dataset
    from dlfm.stages.train import run_training_stage
    from dlfm.training import TrainConfig
    from dlfm.training.runtime import resolve_precision

    dataset = str(simulate_dataset(SimulationConfig(preset="model_ii", n_train=args.n_train, n_val=args.n_val,
                                                    n_test=args.n_test, seed=0), out_dir="data", progress=False))
    print(f"{args.objective} {args.encoder}, {args.epochs} epochs on {dataset}; precision=auto resolves to "
          f"{resolve_precision('auto', torch.device('cpu'))} on this CPU", flush=True)
    scores: dict[str, dict[str, list[float]]] = {p: {"val": [], "test": [], "seconds": []} for p in ("fp32", "bf16")}
    with tempfile.TemporaryDirectory() as store:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
        for seed in args.seeds:
            for precision in ("fp32", "bf16"):
                config = TrainConfig(objective=args.objective, dataset=dataset, encoder=args.encoder, epochs=args.epochs,
                                     seed=seed, precision=precision, experiment_name="precision-parity")
                started = time.perf_counter()
                metrics = run_training_stage(config, progress=False)["metrics"]
                scores[precision]["seconds"].append(time.perf_counter() - started)
                scores[precision]["val"].append(metrics["val/macro_auc"])
                scores[precision]["test"].append(metrics["test/macro_auc"])
                print(f"seed {seed} {precision}: val/macro_auc {metrics['val/macro_auc']:.4f}  test/macro_auc "
                      f"{metrics['test/macro_auc']:.4f}  {scores[precision]['seconds'][-1]:.0f} s", flush=True)

    def spread(values):
        return f"{statistics.mean(values):.4f} +- {statistics.stdev(values) if len(values) > 1 else float('nan'):.4f}"

    for precision, s in scores.items():
        print(f"{precision}: val/macro_auc {spread(s['val'])}, test/macro_auc {spread(s['test'])}, "
              f"{statistics.mean(s['seconds']):.0f} s per run")
    gap = statistics.mean(scores["bf16"]["val"]) - statistics.mean(scores["fp32"]["val"])
    sd = statistics.stdev(scores["fp32"]["val"]) if len(args.seeds) > 1 else float("nan")
    print(f"bf16 - fp32 val/macro_auc {gap:+.4f}; fp32 sd over seeds {sd:.4f}: {'parity' if abs(gap) <= sd else 'NO parity'}; "
          f"time bf16/fp32 {statistics.mean(scores['fp32']['seconds']) / statistics.mean(scores['bf16']['seconds']):.2f}x faster")


if __name__ == "__main__":
    main()
