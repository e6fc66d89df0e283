"""The side-by-side table of docs/results-log.md (issue 21 item 5), read from the runs anchor_side_by_side.sh made.

Each FINISHED evaluate run of a version listed in the script's versions file (``<row> <version>`` lines)
has an ``evaluation_summary.csv`` that gives the mean ± sd over seeds of every
test metric per (task, budget, arm). A row is the ``pretrained-finetune`` arm of that encoder; the
``<architecture>-scratch`` rows are the ``scratch`` arm (run once per architecture). The anchor's published
numbers (Prasha et al. 2025, arXiv 2512.06642, on their Model II data) are the last row, marked as theirs.

    MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db python benchmarks/anchor_table.py \
        [--versions reports/anchor_versions_cpu.txt] [--experiment deeplense-fm-anchor]
"""

from __future__ import annotations

import argparse
import io

import mlflow
import pandas as pd

ANCHOR = "| ViT-MAE 0.9, Prasha et al. 2025 (theirs: DeepLense Model II, ~90k images) | 0.968 | 88.65 % | — | — | ≈ 33 | 0.961 | — | — |"
COLUMNS = ("row", "macro AUC, all labels", "accuracy, all labels", "macro AUC, 100/class", "accuracy, 100/class",
           "SR PSNR (dB)", "SR SSIM", "bicubic PSNR (dB)", "bicubic SSIM")


def cell(frame: pd.DataFrame, task: str, budget: str, arm: str, metric: str, percent: bool = False) -> str:
    """mean ± sd (n seeds) of one metric, or — when that cell was not run."""
    hit = frame[(frame.task == task) & (frame.budget.astype(str) == budget) & (frame.arm == arm)]
    if hit.empty or f"{metric}_mean" not in hit:
        return "—"
    row = hit.iloc[0]
    scale = 100 if percent else 1
    mean, sd = row[f"{metric}_mean"] * scale, row[f"{metric}_sd"] * scale
    return f"{mean:.2f} ± {sd:.2f} %" if percent else f"{mean:.3f} ± {sd:.3f}" if abs(mean) < 2 else f"{mean:.2f} ± {sd:.2f}"


def table_row(label: str, frame: pd.DataFrame, arm: str) -> str:
    """One markdown row: classification at all labels and at 100 per class, SR at all images (with bicubic)."""
    values = [cell(frame, "classification", "all", arm, "test/macro_auc"),
              cell(frame, "classification", "all", arm, "test/accuracy", percent=True),
              cell(frame, "classification", "100", arm, "test/macro_auc"),
              cell(frame, "classification", "100", arm, "test/accuracy", percent=True),
              cell(frame, "superres", "all", arm, "test/psnr"), cell(frame, "superres", "all", arm, "test/ssim"),
              cell(frame, "superres", "all", arm, "test/bicubic_psnr"), cell(frame, "superres", "all", arm, "test/bicubic_ssim")]
    return "| " + " | ".join([label, *values]) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="deeplense-fm-anchor")
    parser.add_argument("--versions", default="reports/anchor_versions_cpu.txt", help="the script's <row> <version> lines")
    args = parser.parse_args()
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(args.experiment)
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"])
    # the evaluate stage names its run after the version (a run name given to mlflow run is replaced), so rows are
    # matched by the dlfm.encoder_version tag
    labels = dict(reversed(line.split()) for line in open(args.versions) if line.strip())  # version -> row
    frames, versions = {}, {}  # row label -> every evaluate run's summary (classification and superres may be two runs)
    for run in runs:
        version = run.data.tags.get("dlfm.encoder_version", "")
        if run.data.tags.get("dlfm.stage") == "evaluate" and "mlflow.parentRunId" not in run.data.tags and version in labels:
            summary = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/evaluation_summary.csv")))
            frames.setdefault(labels[version], []).append(summary)
            versions[labels[version]] = version
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for label, parts in frames.items():
        frame = pd.concat(parts, ignore_index=True).drop_duplicates(["task", "budget", "arm"], keep="last")
        lines.append(table_row(f"{label} (fine-tuned, version {versions[label]})", frame, "pretrained-finetune"))
        if (frame.arm == "scratch").any():
            lines.append(table_row(f"{label.split('-')[0]}-scratch", frame, "scratch"))
    lines.append(ANCHOR)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
