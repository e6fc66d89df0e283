"""Pruners vs no pruning: epochs spent and best val/macro_auc, same seeds, data and trial budget.

    python benchmarks/tune_pruning.py                      # demo size: resnet18, 1200/300/300 images, 12 trials x 4 epochs, seeds 0 1 2
    python benchmarks/tune_pruning.py --encoder conv4 --n_train 300 --n_val 90 --n_test 90 --seeds 0   # a quick look

For each seed, one study per arm (``none`` and each of ``--pruners``) runs through ``run_tune_stage``
(the real stage: MLflow child runs, registration) on a throwaway SQLite tracking store and Optuna
storage, with the stage's default pruner settings. Optuna's TPE sampler is seeded, so every arm of a
seed starts from the same trials. Epochs spent = epochs every trial trained (pruned ones included).

The rule (issue 15): a pruner qualifies as the default if it spends >= 40 % fewer epochs than
``none`` over all seeds and its mean best val/macro_auc is within one sd of ``none``'s, where sd is
the spread of ``none``'s best value over the seeds. WilcoxonPruner is not an arm: it compares
per-instance scores of one evaluation step (folds, problem instances), not a learning curve, so
per-epoch reports do not fit it.
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
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = run_tune_stage(TuneConfig(train=train, n_trials=args.n_trials, storage=storage, study_name=name, pruner=pruner))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    values = [t.value for t in trials if t.state.name == "COMPLETE"]
    return {"epochs": summary["epochs_spent"], "best": summary["best_value"], "values": values,
            "states": summary["states"], "seconds": seconds, "cpu_seconds": cpu_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--n_train", type=int, default=1200)
    parser.add_argument("--n_val", type=int, default=300)
    parser.add_argument("--n_test", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--n_trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pruners", nargs="+", default=["median", "hyperband"])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from dlfm.simulation import SimulationConfig, simulate_dataset

    dataset_dir = str(simulate_dataset(SimulationConfig(preset="model_ii", n_train=args.n_train, n_val=args.n_val,
                                                        n_test=args.n_test, seed=0), out_dir="data", progress=False))
    arms = ["none", *args.pruners]
    print(f"dataset {dataset_dir}; {args.encoder}, {args.n_trials} trials x {args.epochs} epochs, seeds {args.seeds}, "
          f"arms {arms}", flush=True)
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as workdir:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/mlflow.db"
            for arm in arms:
                outcome = run_arm(arm, seed, args, dataset_dir, workdir)
                results[arm].append(outcome)
                none = results["none"][-1]
                sd_trials = statistics.stdev(none["values"]) if len(none["values"]) > 1 else float("nan")
                print(f"seed {seed}: {arm:9s} epochs {outcome['epochs']:3d} ({outcome['epochs'] / none['epochs']:.2f} of none)  "
                      f"best {outcome['best']:.4f} ({outcome['best'] - none['best']:+.4f})  {outcome['states']}  "
                      f"{outcome['seconds']:.0f} s wall, {outcome['cpu_seconds']:.0f} CPU-s  "
                      f"(sd of none's completed trials {sd_trials:.4f})", flush=True)

    none_best = [r["best"] for r in results["none"]]
    sd = statistics.stdev(none_best) if len(none_best) > 1 else float("nan")
    print(f"\nnone: best val/macro_auc {statistics.mean(none_best):.4f} +- {sd:.4f} (sd over {len(none_best)} seeds), "
          f"epochs {sum(r['epochs'] for r in results['none'])}")
    qualified = []
    for arm in args.pruners:
        best = [r["best"] for r in results[arm]]
        saved = 1 - sum(r["epochs"] for r in results[arm]) / sum(r["epochs"] for r in results["none"])
        gap = statistics.mean(best) - statistics.mean(none_best)
        ok = saved >= 0.40 and gap >= -sd
        qualified += [(saved, arm)] if ok else []
        print(f"{arm}: best {statistics.mean(best):.4f} +- {statistics.stdev(best) if len(best) > 1 else float('nan'):.4f}, "
              f"mean best - none {gap:+.4f} ({'within' if gap >= -sd else 'outside'} 1 sd), "
              f"{100 * saved:.0f} % fewer epochs (aim >= 40 %): {'qualifies' if ok else 'does not qualify'}")
    print(f"default by the rule: {max(qualified)[1] if qualified else 'none (no pruner qualifies)'}")


if __name__ == "__main__":
    main()
