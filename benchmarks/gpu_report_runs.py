"""The run-derived tables of benchmarks/gpu_report.sh: the multitask command's runs and the evaluate grid's cells.

    python benchmarks/gpu_report_runs.py multitask EXPERIMENT [EXPERIMENT ...]   # one row per experiment's latest run
    python benchmarks/gpu_report_runs.py grid PARTS_TSV WORKERS ...              # cells finished per workers setting

Reads the store of MLFLOW_TRACKING_URI; prints markdown.
"""

from __future__ import annotations

import sys

import mlflow

GRID_AIM_S = 90  # issue 29: the 72-cell grid at GPU size in at most 90 s


def latest_run(client: mlflow.MlflowClient, experiment_name: str, parents_only: bool = True):
    """The newest run of an experiment (its top-level run), or None."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=200)
    runs = [r for r in runs if not parents_only or "mlflow.parentRunId" not in r.data.tags]
    return runs[0] if runs else None


def multitask(experiments: list[str]) -> None:
    """Wall, batch (as asked and resolved), img/s and test macro AUC of each experiment's latest run."""
    client = mlflow.MlflowClient()
    print("| run | status | batch_size (resolved) | compile | img/s (train) | test macro AUC | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for name in experiments:
        run = latest_run(client, name)
        if run is None:
            print(f"| {name} | not run | — | — | — | — | — |")
            continue
        params, metrics = run.data.params, run.data.metrics
        wall = (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else float("nan")
        speed = metrics.get("train/images_per_second")
        auc = metrics.get("test/macro_auc")
        print(f"| {name} | {run.info.status} | {params.get('batch_size', '?')} ({params.get('batch_size_resolved', '—')}) | "
              f"{params.get('compile', '?')} | {'—' if speed is None else f'{speed:.0f}'} | "
              f"{'—' if auc is None else f'{auc:.3f}'} | {wall:.0f} |")
    print("\nAim (issue 29): the user's multitask command at ≥ 40k img/s.")


def grid(parts_tsv: str, workers: list[str]) -> None:
    """Per workers setting: the part's status and wall time, and the cells its evaluate run finished."""
    client = mlflow.MlflowClient()
    walls = {line.split("\t")[0]: line.rstrip("\n").split("\t") for line in open(parts_tsv) if line.strip()}
    print("| workers | part status | wall (s) | cells finished | evaluate run |")
    print("|---|---|---|---|---|")
    for w in workers:
        _, status, wall, _ = walls.get(f"grid-w{w}", ("", "not run", "0", "0"))
        parent = latest_run(client, f"gpu-report-grid-w{w}")
        if parent is None:
            print(f"| {w} | {status} | {wall} | 0 | none |")
            continue
        children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                      max_results=5000)
        done = sum(c.info.status == "FINISHED" for c in children)
        total = parent.data.tags.get("dlfm.cells", "?")
        print(f"| {w} | {status} | {wall} | {done} of {total} | {parent.info.status} |")
    print(f"\nAim (issue 29): all cells of the GPU-size grid in ≤ {GRID_AIM_S} s.")


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("multitask", "grid"):
        sys.exit("dlfm: error: usage: gpu_report_runs.py multitask EXPERIMENT ... | grid PARTS_TSV WORKERS ...")
    if sys.argv[1] == "multitask":
        multitask(sys.argv[2:])
    else:
        grid(sys.argv[2], sys.argv[3:])


if __name__ == "__main__":
    main()
