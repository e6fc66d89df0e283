"""The transfer stage: evaluate's regression task at the full label budget, pretrained against random.

A thin special case of ``dlfm.stages.evaluate`` (same loop, subsets, seeds and child runs); it adds
the per-parameter comparison views users of ``-e transfer`` know: transfer_table.md/.json,
figures/mae_bars.png and figures/parity.png.
"""

from __future__ import annotations

import numpy as np

from dlfm import tracking
from dlfm.stages.evaluate import run_evaluate_stage
from dlfm.evaluation.regression import Readout
from dlfm.transfer import TransferConfig


def comparison_table(results: dict[str, list[dict]], mean_predictor: dict[str, float], reported: tuple[str, ...]) -> list[dict]:
    """Per reported name: test MAE mean ± sd over seeds for each arm, their ratio, and the mean-predictor MAE."""
    table = []
    for name in reported:
        row = {"parameter": name, "mean_predictor": mean_predictor[f"test/mae_{name}"]}
        for arm in ("pretrained", "random"):
            values = np.array([r[f"test/mae_{name}"] for r in results[arm]])
            row[f"{arm}_mean"], row[f"{arm}_sd"] = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
        row["ratio"] = row["pretrained_mean"] / max(row["random_mean"], 1e-12)
        table.append(row)
    return table


def table_markdown(table: list[dict], readout: Readout) -> str:
    """The comparison table as markdown, each name with its MAE's unit."""
    lines = ["| parameter (MAE unit) | pretrained MAE | random MAE | pretrained/random | mean predictor MAE |",
             "|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['parameter']} ({readout.unit_label(row['parameter'])}) | {row['pretrained_mean']:.4f} ± {row['pretrained_sd']:.4f} | "
                     f"{row['random_mean']:.4f} ± {row['random_sd']:.4f} | {row['ratio']:.3f} | {row['mean_predictor']:.4f} |")
    return "\n".join(lines)


def transfer_views(config: TransferConfig):
    """The ``extra`` hook of run_evaluate_stage: log the pretrained-vs-random views on the parent run."""
    from dlfm.plots.transfer import mae_bars_figure, parity_figure

    pretrained_arm, random_arm = config.arm_names

    def log(results, tasks) -> dict:
        by_arm = {label: sorted((r for r in results if r.cell.arm == arm), key=lambda r: r.cell.seed)
                  for label, arm in (("pretrained", pretrained_arm), ("random", random_arm))}
        data = tasks["regression"]
        readout = data.readout
        # an angle with no test lens above its modulus floor has no MAE (Readout.mae): only the names scored
        scored = tuple(name for name in readout.reported if f"test/mae_{name}" in data.baseline)
        table = comparison_table({label: [r.metrics for r in cells] for label, cells in by_arm.items()}, data.baseline,
                                 scored)
        metrics = {}
        for row in table:
            metrics[f"test/mae_{row['parameter']}_pretrained"] = row["pretrained_mean"]
            metrics[f"test/mae_{row['parameter']}_random"] = row["random_mean"]
            metrics[f"test/mae_ratio_{row['parameter']}"] = row["ratio"]
        tracking.log_metrics(metrics)
        text = table_markdown(table, readout)
        tracking.log_text(text + "\n", "transfer_table.md")
        tracking.log_dict({"rows": table}, "transfer_table.json")
        tracking.log_figure(mae_bars_figure(table, readout.subject), "figures/mae_bars.png")
        first = {label: readout.derive(cells[0].predictions) for label, cells in by_arm.items()}
        tracking.log_figure(parity_figure(readout.derive(data.test.targets), first, readout.reported, readout.units),
                            "figures/parity.png")
        return {"table": table, "transfer_markdown": text}

    return log


def run_transfer_stage(config: TransferConfig) -> dict:
    """Pretrained vs random (frozen, or both fine-tuned) on the dataset's regression targets, every seed, all labels."""
    config.validate()
    return run_evaluate_stage(config.evaluate_config(), stage="transfer", extra=transfer_views(config))
