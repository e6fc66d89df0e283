"""Mean ± sd per (task, budget, arm), the paired verdicts, and their markdown/CSV forms."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dlfm.evaluation.config import ARM_NAMES
from dlfm.evaluation.tasks import TASKS
from dlfm.evaluation.regression import REPORTED, unit_label

# (treated, control): the two questions a researcher asks of a pretrained encoder.
PAIRS = (("pretrained-finetune", "scratch"), ("pretrained-frozen", "random-frozen"))


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample sd (ddof=1; nan for one value: one seed has no spread)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


@dataclass(frozen=True)
class Verdict:
    difference: float  # mean over seeds of treated − control (paired: same subset and head init per seed)
    sd: float  # sd over seeds of that difference (nan with one seed)
    n_seeds: int
    word: str  # "better" | "no difference" | "worse", for the treated arm


def verdict(treated: list[float], control: list[float], higher_is_better: bool) -> Verdict:
    """"better"/"worse" only when the mean paired difference exceeds its sd over seeds; one seed says "no difference"."""
    diffs = np.asarray(treated, dtype=float) - np.asarray(control, dtype=float)
    difference, sd = mean_sd(diffs)
    if len(diffs) < 2 or not abs(difference) > sd:
        return Verdict(difference, sd, len(diffs), "no difference")
    improved = (difference > 0) == higher_is_better
    return Verdict(difference, sd, len(diffs), "better" if improved else "worse")


def _by(results, **match) -> list:
    return sorted((r for r in results if all(getattr(r.cell, k) == v for k, v in match.items())), key=lambda r: r.cell.seed)


def aggregate(results) -> list[dict]:
    """One row per (task, budget, arm): budget size, seeds, and mean/sd of every test metric."""
    rows = []
    keys = sorted({(r.cell.task, r.cell.budget_size, str(r.cell.budget), r.cell.arm) for r in results},
                  key=lambda k: (k[0], k[1], ARM_NAMES.index(k[3])))
    for task, size, budget, arm in keys:
        cells = [r for r in results if (r.cell.task, str(r.cell.budget), r.cell.arm) == (task, budget, arm)]
        row = {"task": task, "budget": budget, "budget_size": size, "arm": arm, "n_seeds": len(cells)}
        for name in sorted(cells[0].metrics):
            row[f"{name}_mean"], row[f"{name}_sd"] = mean_sd([c.metrics[name] for c in cells])
        rows.append(row)
    return rows


def verdicts(results) -> list[dict]:
    """Per task, budget and PAIR present: the paired difference of the task's headline metric, with its spread, in words."""
    out = []
    for task_name, task in TASKS.items():
        budgets = sorted({(r.cell.budget_size, str(r.cell.budget)) for r in results if r.cell.task == task_name})
        for size, budget in budgets:
            for treated, control in PAIRS:
                a = _by([r for r in results if str(r.cell.budget) == budget], task=task_name, arm=treated)
                b = _by([r for r in results if str(r.cell.budget) == budget], task=task_name, arm=control)
                if not a or [r.cell.seed for r in a] != [r.cell.seed for r in b]:
                    continue
                v = verdict([r.metrics[task.headline] for r in a], [r.metrics[task.headline] for r in b], task.higher_is_better)
                spread = f"± {v.sd:.3f}" if v.n_seeds > 1 else "(one seed: no spread)"
                seeds = f"{v.n_seeds} seed" + ("s" if v.n_seeds != 1 else "")
                sentence = (f"{task_name}, {size} {task.budget_unit} ({budget}): {treated} − {control} = "
                            f"{v.difference:+.3f} {spread} {task.headline} over {seeds} → {v.word}")
                out.append({"task": task_name, "budget": budget, "budget_size": size, "treated": treated, "control": control,
                            "metric": task.headline, "difference": v.difference, "sd": v.sd, "n_seeds": v.n_seeds,
                            "verdict": v.word, "sentence": sentence})
    return out


def _cell(row: dict | None, metric: str, digits: int = 3) -> str:
    if row is None or f"{metric}_mean" not in row:
        return "—"
    mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def markdown(rows: list[dict], verdict_rows: list[dict], mean_predictor: dict[str, float] | None = None) -> str:
    """evaluation.md: per task a budget × arm table of the headline metric, the verdicts, and regression per parameter."""
    lines = ["# Label-efficiency evaluation", "",
             "Test metrics, mean ± sd over seeds. Every arm of a (budget, seed) shares the label subset, head init, "
             "optimiser and schedule.", ""]
    for task_name, task in TASKS.items():
        task_rows = [r for r in rows if r["task"] == task_name]
        if not task_rows:
            continue
        arms = [a for a in ARM_NAMES if any(r["arm"] == a for r in task_rows)]
        direction = "higher" if task.higher_is_better else "lower"
        lines += [f"## {task_name}: {task.headline} ({direction} is better)", "",
                  f"| budget ({task.budget_unit}) | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
        budgets = sorted({(r["budget_size"], r["budget"]) for r in task_rows})
        for size, budget in budgets:
            cells = [_cell(next((r for r in task_rows if r["budget"] == budget and r["arm"] == a), None), task.headline) for a in arms]
            lines.append(f"| {size} ({budget}) | " + " | ".join(cells) + " |")
        lines += ["", "Verdicts (paired over seeds; better/worse only when |mean difference| > its sd):", ""]
        lines += [f"- {v['sentence']}" for v in verdict_rows if v["task"] == task_name]
        if task_name == "regression":
            size, budget = budgets[-1]
            largest = {a: next(r for r in task_rows if r["budget"] == budget and r["arm"] == a) for a in arms}
            lines += ["", f"### regression per parameter at {size} labelled images ({budget}): test MAE", "",
                      "| parameter | " + " | ".join(arms) + " | mean predictor |", "|---|" + "---|" * (len(arms) + 1)]
            for name in REPORTED:
                unit = f" ({unit_label(name)})"
                base = (mean_predictor or {}).get(f"test/mae_{name}")
                lines.append(f"| {name}{unit} | " + " | ".join(_cell(largest[a], f"test/mae_{name}", 4) for a in arms)
                             + f" | {'—' if base is None else f'{base:.4f}'} |")
        lines.append("")
    return "\n".join(lines)


def cells_table(results) -> list[dict]:
    """One flat record per cell (for evaluation_cells.csv)."""
    return [{"task": r.cell.task, "budget": str(r.cell.budget), "budget_size": r.cell.budget_size, "n_labels": r.cell.n_labels,
             "arm": r.cell.arm, "seed": r.cell.seed, **r.metrics} for r in results]
