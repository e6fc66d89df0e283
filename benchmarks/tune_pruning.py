"""Median pruning vs no pruning: epochs spent and best val/macro_auc, same seeds and trial budget.

    python benchmarks/tune_pruning.py                     # demo size: resnet18, 1500/300/300 images, 12 trials x 6 epochs
    python benchmarks/tune_pruning.py --encoder conv4 --n_train 600 --n_val 150 --n_test 150   # a CPU-sized run

For each seed, two studies run through ``run_tune_stage`` (the real stage: MLflow child runs,
registration) on a throwaway SQLite tracking store and Optuna storage: ``pruner=none`` and
``pruner=median`` with the stage's default median settings. Epochs spent = epochs every trial
trained (pruned ones included). "sd" is the standard deviation of val/macro_auc over the
completed trials of the unpruned study: the aim is >= 40 % fewer epochs with the best value
within one sd.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def run_arm(pruner: str, seed: int, args, dataset_dir: str, workdir: str) -> dict:
    """One study with ``pruner``; returns epochs spent, best value, completed values and wall time."""
    import optuna

    from dlfm.stages.tune import run_tune_stage
    from dlfm.training import TrainConfig
    from dlfm.tune import TuneConfig

    storage = f"sqlite:///{workdir}/optuna.db"
    name = f"bench-{pruner}-seed{seed}"
    train = TrainConfig(objective="multitask", dataset=dataset_dir, encoder=args.encoder, epochs=args.epochs,
                        batch_size=args.batch_size, seed=seed, device=args.device, experiment_name="tune-bench")
    started = time.perf_counter()
    summary = run_tune_stage(TuneConfig(train=train, n_trials=args.n_trials, storage=storage, study_name=name, pruner=pruner))
    seconds = time.perf_counter() - started
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    values = [t.value for t in trials if t.state.name == "COMPLETE"]
    return {"epochs": summary["epochs_spent"], "best": summary["best_value"], "values": values,
            "states": summary["states"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--n_train", type=int, default=1500)
    parser.add_argument("--n_val", type=int, default=300)
    parser.add_argument("--n_test", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--n_trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from dlfm.simulation import SimulationConfig, simulate_dataset

    dataset_dir = str(simulate_dataset(SimulationConfig(preset="model_ii", n_train=args.n_train, n_val=args.n_val,
                                                        n_test=args.n_test, seed=0), out_dir="data", progress=False))
    print(f"dataset {dataset_dir}; {args.encoder}, {args.n_trials} trials x {args.epochs} epochs, seeds {args.seeds}")
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as workdir:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/mlflow.db"
            none = run_arm("none", seed, args, dataset_dir, workdir)
            median = run_arm("median", seed, args, dataset_dir, workdir)
        sd = statistics.stdev(none["values"]) if len(none["values"]) > 1 else float("nan")
        rows.append((seed, none, median, sd))
        print(f"seed {seed}: none   epochs {none['epochs']:3d}  best {none['best']:.4f}  {none['states']}  {none['seconds']:.0f} s")
        print(f"seed {seed}: median epochs {median['epochs']:3d}  best {median['best']:.4f}  {median['states']}  {median['seconds']:.0f} s")
        print(f"seed {seed}: epochs median/none = {median['epochs'] / none['epochs']:.2f} "
              f"({100 * (1 - median['epochs'] / none['epochs']):.0f} % fewer); best median - none = "
              f"{median['best'] - none['best']:+.4f} (sd of completed trials without pruning {sd:.4f}); "
              f"wall time median/none = {median['seconds'] / none['seconds']:.2f}")
    epochs_ratio = sum(r[2]["epochs"] for r in rows) / sum(r[1]["epochs"] for r in rows)
    print(f"all seeds: epochs median/none = {epochs_ratio:.2f}; mean best none {statistics.mean(r[1]['best'] for r in rows):.4f}, "
          f"median {statistics.mean(r[2]['best'] for r in rows):.4f}")


if __name__ == "__main__":
    main()
