"""The table of benchmarks/vit_mae_learns.sh (issue 27 item 4): does ViT MAE learn, and does its probe beat random?

Per pretraining run: batch (resolved), lr_effective, epochs run, the per-epoch val/masked_norm_mse_vs_position_mean at its first
epoch, its best, the first epoch at or below the 0.8 aim, the last; img/s; its linear probe's test macro AUC. Then the
evaluate run: frozen probe of that encoder against a random encoder of the same architecture (mean ± sd over seeds).

    MLFLOW_TRACKING_URI=... python benchmarks/vit_mae_learns_table.py [--experiment vit-mae-learns]
"""

from __future__ import annotations

import argparse
import io

import mlflow
import pandas as pd

AIM = 0.8
RATIO = "val/masked_norm_mse_vs_position_mean"  # the name; per epoch it is logged as val_epoch/… (step = epoch)
EPOCH_RATIO = "val_epoch/masked_norm_mse_vs_position_mean"


def pretraining_rows(client: mlflow.MlflowClient, runs) -> list[str]:
    lines = ["| run | status | batch (resolved) | lr_effective | epochs | ratio at epoch 1 | best ratio | first epoch ≤ 0.8 | "
             "last ratio | img/s | probe test macro AUC |", "|" + "---|" * 11]
    for run in runs:
        if run.data.tags.get("dlfm.stage") != "mae":
            continue
        history = sorted(client.get_metric_history(run.info.run_id, EPOCH_RATIO), key=lambda m: m.step)
        values = [m.value for m in history]
        first_ok = next((m.step for m in history if m.value <= AIM), None)
        params, metrics = run.data.params, run.data.metrics
        fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
        speed = metrics.get("train/images_per_second")
        lines.append(f"| {run.info.run_name} | {run.info.status} | {params.get('batch_size')} ({params.get('batch_size_resolved', '—')}) | "
                     f"{params.get('lr_effective', '—')} | {len(values)} | {fmt(values[0] if values else None)} | "
                     f"{fmt(min(values) if values else None)} | {'not reached' if first_ok is None else first_ok} | "
                     f"{fmt(values[-1] if values else None)} | {'—' if speed is None else f'{speed:.0f}'} | "
                     f"{fmt(metrics.get('test/probe_macro_auc'))} |")
    return lines


def probe_rows(runs) -> list[str]:
    lines = ["| encoder version | budget (labels per class) | arm | test macro AUC (mean ± sd) | seeds |", "|---|---|---|---|---|"]
    for run in runs:
        if run.data.tags.get("dlfm.stage") != "evaluate" or "mlflow.parentRunId" in run.data.tags:
            continue
        try:
            text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/evaluation_summary.csv")
        except Exception as error:  # an evaluate run cut before its summary: say so, keep the rest of the table
            lines.append(f"| {run.data.tags.get('dlfm.encoder_version', '?')} | — | no summary ({run.info.status}: {type(error).__name__}) | — | — |")
            continue
        frame = pd.read_csv(io.StringIO(text))
        for _, row in frame[frame.task == "classification"].iterrows():
            seeds = row.get("n_seeds", row.get("seeds", "?"))
            lines.append(f"| {run.data.tags.get('dlfm.encoder_version', '?')} | {row.budget} | {row.arm} | "
                         f"{row['test/macro_auc_mean']:.3f} ± {row['test/macro_auc_sd']:.3f} | {seeds} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="vit-mae-learns")
    args = parser.parse_args()
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"no runs: experiment {args.experiment} does not exist")
        return
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=500)
    print("\n".join(pretraining_rows(client, runs)))
    print(f"\nAim (issue 27 item 4): {RATIO} ≤ {AIM} within 30 epochs at batch 256 and 1024 (1.0 = positions only).\n")
    print("\n".join(probe_rows(runs)))


if __name__ == "__main__":
    main()
