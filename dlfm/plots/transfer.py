"""Transfer figures: grouped MAE bars (pretrained vs random) and parity plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def mae_bars_figure(table: list[dict], subject: str):
    """Per reported name test MAE, mean ± sd over seeds, relative to the mean predictor (1 = no skill); ``subject`` titles it."""
    names = [row["parameter"] for row in table]
    x = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(max(7, len(names) * 0.8), 4))
    width = 0.38
    for offset, arm, color in ((-width / 2, "pretrained", "tab:blue"), (width / 2, "random", "tab:grey")):
        base = np.array([row["mean_predictor"] for row in table])
        means = np.array([row[f"{arm}_mean"] for row in table]) / base
        sds = np.array([row[f"{arm}_sd"] for row in table]) / base
        axis.bar(x + offset, means, width, yerr=sds, capsize=3, label=arm, color=color)
    axis.axhline(1.0, color="k", lw=0.8, ls="--", label="predict the train mean")
    axis.set_xticks(x, names, rotation=30, ha="right")
    axis.set(ylabel="test MAE / MAE of the mean predictor", title=f"Frozen encoder → {subject} (lower is better)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def parity_figure(truth: dict[str, np.ndarray], predictions: dict[str, dict[str, np.ndarray]], names: tuple[str, ...],
                  units: dict[str, str]):
    """True vs predicted per reported name, one colour per encoder arm; ``units`` titles the names that have one."""
    cols = min(4, len(names))
    rows = int(np.ceil(len(names) / cols))
    figure, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        lo, hi = float(np.min(truth[name])), float(np.max(truth[name]))
        for arm, color in (("random", "tab:grey"), ("pretrained", "tab:blue")):
            axis.scatter(truth[name], predictions[arm][name], s=4, alpha=0.5, color=color, label=arm)
        axis.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        unit = units.get(name)
        axis.set_title(f"{name}" + (f" ({unit})" if unit else ""), fontsize=9)
    for axis in list(axes.flat)[len(names):]:
        axis.set_axis_off()
    axes.flat[0].legend(fontsize=7)
    figure.supxlabel("true")
    figure.supylabel("predicted")
    figure.tight_layout()
    return figure
