"""Label-efficiency figures: metric against labels (log x), one line per arm, ±1 sd bands, verdicts with their CIs."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dlfm.evaluation.config import ARM_NAMES  # noqa: E402
from dlfm.evaluation.corpus_spread import verdict_parts  # noqa: E402
from dlfm.evaluation.summary import CONFIDENCE  # noqa: E402
from dlfm.evaluation.tasks import TASKS  # noqa: E402
from dlfm.evaluation.regression import Readout  # noqa: E402

STYLE = {"pretrained-frozen": ("tab:blue", "-"), "random-frozen": ("tab:grey", "-"),
         "pretrained-finetune": ("tab:orange", "--"), "scratch": ("k", "--")}


def _curve(axis, rows: list[dict], metric: str) -> None:
    sizes = sorted({r["budget_size"] for r in rows})
    for arm in ARM_NAMES:
        points = sorted((r["budget_size"], r[f"{metric}_mean"], r[f"{metric}_sd"]) for r in rows if r["arm"] == arm
                        and f"{metric}_mean" in r)
        if not points:
            continue
        x, mean, sd = (np.array(v, dtype=float) for v in zip(*points))
        sd = np.nan_to_num(sd)  # one seed: no band
        color, style = STYLE[arm]
        axis.plot(x, mean, style, marker="o", ms=3, color=color, label=arm)
        axis.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.15, lw=0)
    axis.set_xscale("log")
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # label the budgets, not log decades
    axis.set_xticks(sizes, [str(size) for size in sizes])


def verdict_note(v: dict) -> str:
    """One short line of a verdict under a panel: budget, pair, difference, its interval, the word."""
    interval = "" if v["n_seeds"] < 2 else f" [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"
    return f"{v['budget']}: {v['treated']} − {v['control']} {v['difference']:+.3f}{interval} → {v['verdict']}"


def label_efficiency_figure(rows: list[dict], verdict_rows: list[dict] = ()):
    """One panel per task: its headline metric against labelled images; under it the verdicts with their intervals."""
    tasks = [name for name in TASKS if any(r["task"] == name for r in rows)]
    notes = {name: [verdict_note(v) for v in verdict_rows if v["task"] == name] for name in tasks}
    extra = 0.16 * max((len(n) for n in notes.values()), default=0)  # inches of verdict lines under the panels
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8 + extra), squeeze=False)
    for axis, name in zip(axes.flat, tasks):
        task = TASKS[name]
        _curve(axis, [r for r in rows if r["task"] == name], task.headline)
        references = [r[f"{task.reference}_mean"] for r in rows if r["task"] == name and f"{task.reference}_mean" in r]
        if references:  # a baseline every cell shares (superres: bicubic upsampling), one dotted line
            axis.axhline(references[0], color="tab:red", ls=":", lw=1, label=task.reference.split("/")[-1])
            axis.legend(fontsize=7)
        better = "higher" if task.higher_is_better else "lower"
        axis.set(xlabel=f"{task.budget_unit} (log)", ylabel=task.headline,
                 title=f"{name} ({better} is better; bands ±1 sd)")
        axis.grid(alpha=0.3, which="both")
        if notes[name]:
            seeds = max(v["n_seeds"] for v in verdict_rows if v["task"] == name)
            axis.annotate("\n".join([f"paired difference, {CONFIDENCE:.0%} CI over {seeds} seeds:", *notes[name]]),
                          (0, 0), xytext=(0, -36), xycoords="axes fraction", textcoords="offset points",
                          va="top", fontsize=6.5, family="monospace")
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def regression_parameters_figure(rows: list[dict], readout: Readout):
    """Test MAE of every name the readout reports against labelled images, in a small grid."""
    rows = [r for r in rows if r["task"] == "regression"]
    names = readout.reported
    cols = min(4, len(names))
    figure, axes = plt.subplots(math.ceil(len(names) / cols), cols, figsize=(3.3 * cols, 2.7 * math.ceil(len(names) / cols)),
                                squeeze=False)
    for axis, name in zip(axes.flat, names):
        _curve(axis, rows, f"test/mae_{name}")
        unit = f" ({readout.units[name]})" if name in readout.units else ""
        axis.set_title(f"MAE {name}{unit}", fontsize=9)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3, which="both")
    for axis in list(axes.flat)[len(names):]:
        axis.set_axis_off()
    axes.flat[0].legend(fontsize=6)
    figure.supxlabel("labelled images (log)")
    figure.tight_layout()
    return figure


def corpus_spread_figure(spread: dict):
    """main's verdicts over pretraining corpora (``spread``: its corpus_spread.json): one panel per task, per budget
    and arm pair each corpus's difference (dots), their mean, the 95 % interval over corpora (thick) and over
    evaluate's seeds (thin), and the word over corpora."""
    seeds = [d["pretrain_seed"] for d in spread["draws"]]
    rows = [r for r in spread["rows"] if r["kind"] == "verdict" and verdict_parts(r["name"])[3] in ARM_NAMES]
    tasks = [name for name in TASKS if any(verdict_parts(r["name"])[0] == name for r in rows)]
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    colors = plt.get_cmap("tab10")
    for axis, name in zip(axes.flat, tasks):
        task_rows = [r for r in rows if verdict_parts(r["name"])[0] == name]
        for x, row in enumerate(task_rows):
            for i, value in enumerate(row["values"]):
                if value is not None:
                    axis.plot(x - 0.05 + 0.1 * i / max(len(seeds) - 1, 1), value, "o", ms=5, color=colors(i),
                              label=f"corpus {seeds[i]}" if x == 0 else None)
            for offset, (low, high), width, label in ((-0.18, (row["low"], row["high"]), 3, "over corpora"),
                                                      (0.18, (row.get("seed_low"), row.get("seed_high")), 1.2,
                                                       "over evaluate's seeds")):
                if low is not None and not math.isnan(low):
                    axis.errorbar(x + offset, row["mean"], yerr=[[row["mean"] - low], [high - row["mean"]]], fmt="_",
                                  color="k", ms=10, elinewidth=width, capsize=3,
                                  label=f"mean, {CONFIDENCE:.0%} interval {label}" if x == 0 else None)
            axis.annotate(row["word"], (x, 1.0), xycoords=("data", "axes fraction"), xytext=(0, -10),
                          textcoords="offset points", ha="center", va="top", fontsize=7)
        axis.axhline(0, color="tab:red", lw=0.8, ls=":")
        axis.set_xticks(range(len(task_rows)), ["{1}\n{2} −\n{3}".format(*verdict_parts(r["name"])) for r in task_rows],
                        fontsize=7)
        axis.set_xlim(-0.6, len(task_rows) - 0.4)
        better = "higher" if TASKS[name].higher_is_better else "lower"
        axis.set(ylabel=f"difference of {TASKS[name].headline}", xlabel=f"budget ({TASKS[name].budget_unit})",
                 title=f"{name}: treated − control ({better} is better)")
        axis.grid(alpha=0.3, axis="y")
        low, high = axis.get_ylim()
        axis.set_ylim(low, high + 0.12 * (high - low))  # room for the words
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    figure.suptitle(f"Verdicts over {len(seeds)} pretraining corpora ({spread['objective']})", fontsize=10)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure
