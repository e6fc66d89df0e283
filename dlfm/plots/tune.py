"""Figures for a tune run, drawn from plain trial records (see ``dlfm.tune.results.trial_records``).

Plain matplotlib rather than ``optuna.visualization.matplotlib`` (experimental, and it draws no
pruned curves apart from the completed ones).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator  # noqa: E402

STATE_STYLE = {  # colour and marker per trial state
    "COMPLETE": ("tab:blue", "o"),
    "PRUNED": ("tab:orange", "x"),
    "FAIL": ("tab:red", "v"),
}


def _last_value(record: dict) -> float | None:
    """The trial's objective: its value when complete, else its last reported epoch."""
    if record["value"] is not None:
        return record["value"]
    if record["intermediate"]:
        return list(record["intermediate"].values())[-1]
    return None


def optimisation_history_figure(records: list[dict], metric: str = "val/macro_auc"):
    """Objective per trial number by state, with the running best of the completed trials."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for state, (colour, marker) in STATE_STYLE.items():
        points = [(r["number"], _last_value(r)) for r in records if r["state"] == state and _last_value(r) is not None]
        if points:
            xs, ys = zip(*points)
            label = state.lower() + (" (last epoch)" if state != "COMPLETE" else "")
            axis.scatter(xs, ys, color=colour, marker=marker, label=label)
    complete = sorted((r["number"], r["value"]) for r in records if r["state"] == "COMPLETE")
    if complete:
        xs = [n for n, _ in complete]
        axis.step(xs, np.maximum.accumulate([v for _, v in complete]), where="post", color="k", lw=1, label="best so far")
    axis.set(xlabel="trial", ylabel=metric, title="optimisation history")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.legend(fontsize=8)
    return figure


def param_vs_objective_figure(records: list[dict], param: str = "recon_weight", metric: str = "val/macro_auc", log: bool = True):
    """The searched parameter (log axis unless ``log`` is False) against the objective; pruned trials at their last epoch."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for state, (colour, marker) in STATE_STYLE.items():
        points = [(r["params"][param], _last_value(r)) for r in records
                  if r["state"] == state and param in r["params"] and _last_value(r) is not None]
        if points:
            xs, ys = zip(*points)
            axis.scatter(xs, ys, color=colour, marker=marker, label=state.lower())
    axis.set(xlabel=param, ylabel=metric, title=f"{param} vs {metric}")
    if not log:  # a fraction such as mask_ratio: a plain linear axis
        axis.legend(fontsize=8)
        figure.tight_layout()
        return figure
    axis.set(xscale="log", xlabel=f"{param} (log scale)")
    # Plain decimals (0.01, 0.1, 1) rather than 10^k, plus labelled 2× and 5× ticks in each decade, so a
    # searched value can be read off the axis without the crowding of every minor tick.
    axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    axis.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.tick_params(axis="x", which="minor", labelsize=7)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def intermediate_values_figure(records: list[dict], metric: str = "val/macro_auc"):
    """Per-epoch objective of every trial: completed curves solid, pruned ones dashed and ending in x."""
    figure, axis = plt.subplots(figsize=(6, 4))
    labelled = set()
    for record in records:
        if not record["intermediate"]:
            continue
        state = record["state"] if record["state"] in STATE_STYLE else "FAIL"
        colour, marker = STATE_STYLE[state]
        epochs, values = zip(*record["intermediate"].items())
        label = None if state in labelled else state.lower()
        labelled.add(state)
        axis.plot(epochs, values, color=colour, ls="-" if state == "COMPLETE" else "--", lw=1, alpha=0.8, label=label)
        if state != "COMPLETE":
            axis.plot(epochs[-1], values[-1], color=colour, marker=marker)
    axis.set(xlabel="epoch", ylabel=metric, title="intermediate values (pruned trials dashed)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if labelled:
        axis.legend(fontsize=8)
    return figure
