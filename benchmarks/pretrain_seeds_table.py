"""The table of benchmarks/pretrain_seeds.sh: main's numbers over pretraining-corpus seeds, with their spread.

One row per seed (the newest FINISHED main run with that ``pretrain_seed``), then mean ± sd and the 95 % t interval
over the seeds, of each objective's ``val/probe_macro_auc`` and of evaluate's verdict differences (pretrained −
random per task and budget, each itself a mean over evaluate's seeds). A verdict over evaluate's seeds is
conditional on one encoder; this is the spread across encoders that it leaves out.

    MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db python benchmarks/pretrain_seeds_table.py --experiment deeplense-fm-pretrain-seeds
"""

from __future__ import annotations

import argparse
import math
import sys

import mlflow

from dlfm.evaluation.summary import confidence_interval, mean_sd

PROBE_SUFFIX = "/val_probe_macro_auc"
VERDICT_PREFIX = "evaluate/verdict_diff_"


def runs_by_seed(experiment: str) -> dict[str, dict[str, float]]:
    """{pretrain_seed: the newest finished main run's metrics}."""
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"dlfm: error: no experiment {experiment!r} in {mlflow.get_tracking_uri()}; run "
                         "benchmarks/pretrain_seeds.sh first, or pass --experiment")
    runs = client.search_runs([found.experiment_id], "tags.`dlfm.stage` = 'main' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1000)
    newest: dict[str, dict[str, float]] = {}
    for run in runs:
        newest.setdefault(run.data.params.get("pretrain_seed", "?"), run.data.metrics)
    return dict(sorted(newest.items()))


def columns(rows: dict[str, dict[str, float]]) -> list[str]:
    """The probe of each objective, then each verdict difference, in a stable order."""
    names = {name for metrics in rows.values() for name in metrics}
    return (sorted(n for n in names if n.endswith(PROBE_SUFFIX))
            + sorted(n for n in names if n.startswith(VERDICT_PREFIX)))


def label(name: str) -> str:
    """``autoencoder probe`` or ``classification 10: pretrained-frozen − random-frozen``."""
    if name.endswith(PROBE_SUFFIX):
        return f"{name[:-len(PROBE_SUFFIX)]} probe"
    task, budget, arms = name[len(VERDICT_PREFIX):].split("_", 2)  # classification_10_pretrained-frozen-vs-random-frozen
    return f"{task} {budget}: {arms.replace('-vs-', ' − ')}"


def table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown: one column per quantity, one row per seed, then mean ± sd and the 95 % interval over seeds."""
    names = columns(rows)
    lines = ["| pretrain_seed | " + " | ".join(label(n) for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for seed, metrics in rows.items():
        lines.append(f"| {seed} | " + " | ".join(f"{metrics[n]:+.4f}" if n in metrics else "—" for n in names) + " |")
    summary, interval = [], []
    for name in names:
        values = [metrics[name] for metrics in rows.values() if name in metrics]
        mean, sd = mean_sd(values)
        low, high = confidence_interval(values)
        summary.append(f"{mean:+.4f} ± {sd:.4f}")
        interval.append("—" if math.isnan(low) else f"[{low:+.4f}, {high:+.4f}]")
    lines.append(f"| mean ± sd ({len(rows)} seeds) | " + " | ".join(summary) + " |")
    lines.append("| 95 % t interval | " + " | ".join(interval) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="deeplense-fm-pretrain-seeds")
    args = parser.parse_args(argv)
    rows = runs_by_seed(args.experiment)
    if not rows:
        sys.exit(f"dlfm: error: experiment {args.experiment!r} has no finished main run; run benchmarks/pretrain_seeds.sh")
    print(table(rows))


if __name__ == "__main__":
    main()
