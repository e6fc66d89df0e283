"""Mean ± sd per (task, budget, arm), the paired verdicts (t intervals over seeds), and their markdown/CSV forms."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dlfm.evaluation.config import ALL, ARM_NAMES
from dlfm.evaluation.tasks import TASKS, TaskData

# (treated, control): the two questions a researcher asks of a pretrained encoder.
PAIRS = (("pretrained-finetune", "scratch"), ("pretrained-frozen", "random-frozen"))


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample sd (ddof=1; nan for one value: one seed has no spread)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


CONFIDENCE = 0.95  # two-sided level of the interval on the mean paired difference (Student t over seeds)
TOO_FEW = "too few seeds to tell"  # the word whenever the interval includes 0 (or one seed gives no interval)
TOO_FEW_IMAGES = "too few test images to tell"  # the seed interval excludes 0, the test-image bootstrap's does not
BOOTSTRAP_RESAMPLES = 200  # test-image bootstrap draws per verdict (paired: the same draw for both arms and every seed)
BOOTSTRAP_SEED = 0xB007  # the draws' own seed, so a verdict is reproducible
RULE = (f"paired over seeds: the mean difference with its {CONFIDENCE:.0%} confidence interval, t over seeds; "
        f"better/worse only when the interval excludes 0, else {TOO_FEW}")  # one home for the rule's wording
# What the intervals cover, in words: evaluation.md and main's report print it under the verdicts.
CONDITIONING = (
    "The seed interval covers what changes with the seed (the label subset, the head's init, the random encoder); "
    f"the test-image interval ({BOOTSTRAP_RESAMPLES} paired bootstrap draws of the test split, stratified by class for "
    f"classification, percentile {CONFIDENCE:.0%}) covers which test images were drawn, and a verdict needs both to "
    f"exclude 0 (else {TOO_FEW!r} or {TOO_FEW_IMAGES!r}). Neither covers pretraining: both are conditional on this one "
    "encoder version (one pretraining run and seed); main's spread_pretrain_seeds pretrains again on more corpora and "
    "reports that spread. Budgets that draw "
    "the same labels get one verdict.")


@dataclass(frozen=True)
class Verdict:
    difference: float  # mean over seeds of treated − control (paired: same subset and head init per seed)
    sd: float  # sd over seeds of that difference (nan with one seed)
    n_seeds: int
    ci_low: float  # CONFIDENCE interval of the mean difference: mean ± t(n−1) · sd/√n (nan with one seed)
    ci_high: float
    word: str  # "better" | "worse" for the treated arm, or TOO_FEW
    differences: tuple[float, ...] = ()  # treated − control per seed, in the callers' seed order

    @property
    def reason(self) -> str:
        """Why the word: the interval, or its absence."""
        if self.n_seeds < 2:
            return "one seed: no interval"
        if self.word == TOO_FEW:
            return f"within noise: the {CONFIDENCE:.0%} CI includes 0"
        return f"the {CONFIDENCE:.0%} CI excludes 0"


def confidence_interval(diffs) -> tuple[float, float]:
    """Two-sided CONFIDENCE interval of the mean of ``diffs`` (t with n−1 degrees of freedom); nan for one value."""
    from scipy.stats import t

    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) < 2:
        return math.nan, math.nan
    mean, sd = mean_sd(diffs)
    half = float(t.ppf(0.5 + CONFIDENCE / 2, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    return mean - half, mean + half


def verdict(treated: list[float], control: list[float], higher_is_better: bool) -> Verdict:
    """"better"/"worse" only when the CONFIDENCE interval of the mean paired difference excludes 0, else TOO_FEW."""
    diffs = np.asarray(treated, dtype=float) - np.asarray(control, dtype=float)
    difference, sd = mean_sd(diffs)
    low, high = confidence_interval(diffs)
    per_seed = tuple(float(d) for d in diffs)
    if len(diffs) < 2 or low <= 0 <= high:
        return Verdict(difference, sd, len(diffs), low, high, TOO_FEW, per_seed)
    improved = (difference > 0) == higher_is_better
    return Verdict(difference, sd, len(diffs), low, high, "better" if improved else "worse", per_seed)


def verdict_sentence(v: Verdict, metric: str) -> str:
    """The difference, its interval and the number of seeds, then the word and why."""
    seeds = f"{v.n_seeds} seed" + ("s" if v.n_seeds != 1 else "")
    interval = "" if v.n_seeds < 2 else f", {CONFIDENCE:.0%} CI [{v.ci_low:+.3f}, {v.ci_high:+.3f}]"
    return f"{v.difference:+.3f} {metric}{interval} over {seeds} → {v.word} ({v.reason})"


def _by(results, **match) -> list:
    return sorted((r for r in results if all(getattr(r.cell, k) == v for k, v in match.items())), key=lambda r: r.cell.seed)


def aggregate(results) -> list[dict]:
    """One row per (task, budget, arm): budget size, seeds, and mean/sd of every test metric."""
    rows = []
    keys = sorted({(r.cell.task, r.cell.budget_size, str(r.cell.budget), r.cell.arm) for r in results},
                  key=lambda k: (k[0], k[1], k[2] == ALL, ARM_NAMES.index(k[3])))
    for task, size, budget, arm in keys:
        cells = [r for r in results if (r.cell.task, str(r.cell.budget), r.cell.arm) == (task, budget, arm)]
        row = {"task": task, "budget": budget, "budget_size": size, "arm": arm, "n_seeds": len(cells),
               "same_labels_as": "" if cells[0].cell.same_labels_as is None else str(cells[0].cell.same_labels_as)}
        for name in sorted(cells[0].metrics):
            row[f"{name}_mean"], row[f"{name}_sd"] = mean_sd([c.metrics[name] for c in cells])
        rows.append(row)
    return rows


def bootstrap_interval(treated: list, control: list, task, data: TaskData) -> tuple[float, float]:
    """Percentile CONFIDENCE interval of the mean over seeds of treated − control under resampled test images.

    Each draw resamples the test split once and scores every seed's two cells on it (paired), so the interval
    covers the test set's draw, conditional on the seeds' label subsets and inits.
    """
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    diffs = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        index = task.resample(data, rng)
        diffs.append(np.mean([task.headline_on(a.predictions, data, index) - task.headline_on(b.predictions, data, index)
                              for a, b in zip(treated, control)]))
    low, high = np.percentile(diffs, [50 * (1 - CONFIDENCE), 100 - 50 * (1 - CONFIDENCE)])
    return float(low), float(high)


def verdicts(results, tasks: dict[str, TaskData] | None = None) -> list[dict]:
    """Per task, distinct label subset and PAIR present: the paired difference of the task's headline metric, its seed
    interval and (with ``tasks``, whose test targets score the kept predictions) its test-image bootstrap interval, in words.

    A budget whose labels equal a smaller one's (``same_labels_as``) gets no verdict of its own: the smaller one's
    sentence names it.
    """
    out = []
    for task_name, task in TASKS.items():
        budgets = sorted({(r.cell.budget_size, str(r.cell.budget)) for r in results if r.cell.task == task_name
                          and r.cell.same_labels_as is None})
        data = (tasks or {}).get(task_name)
        for size, budget in budgets:
            twins = sorted({str(r.cell.budget) for r in results if r.cell.task == task_name
                            and str(r.cell.same_labels_as) == budget})
            also = f" (also budget {', '.join(twins)}: the same labels)" if twins else ""
            for treated, control in PAIRS:
                a = _by([r for r in results if str(r.cell.budget) == budget], task=task_name, arm=treated)
                b = _by([r for r in results if str(r.cell.budget) == budget], task=task_name, arm=control)
                if not a or [r.cell.seed for r in a] != [r.cell.seed for r in b]:
                    continue
                v = verdict([r.metrics[task.headline] for r in a], [r.metrics[task.headline] for r in b], task.higher_is_better)
                word, boot = v.word, (math.nan, math.nan)
                sentence = (f"{task_name}, {size} {task.budget_unit} ({budget}){also}: {treated} − {control} = "
                            + verdict_sentence(v, task.headline))
                if data is not None and all(r.predictions is not None and len(r.predictions) for r in a + b):
                    boot = bootstrap_interval(a, b, task, data)
                    if word != TOO_FEW and boot[0] <= 0 <= boot[1]:
                        word = TOO_FEW_IMAGES
                    sentence += (f"; test-image bootstrap {CONFIDENCE:.0%} CI [{boot[0]:+.3f}, {boot[1]:+.3f}]"
                                 + (f" includes 0 → {word}" if word == TOO_FEW_IMAGES else ""))
                out.append({"task": task_name, "budget": budget, "budget_size": size, "treated": treated, "control": control,
                            "metric": task.headline, "difference": v.difference, "sd": v.sd, "ci_low": v.ci_low,
                            "ci_high": v.ci_high, "n_seeds": v.n_seeds, "boot_low": boot[0], "boot_high": boot[1],
                            "verdict": word, "sentence": sentence,
                            "seed_differences": dict(zip((str(r.cell.seed) for r in a), v.differences))})
            out += baseline_verdicts(results, task_name, task, size, budget)
    return out


def baseline_verdicts(results, task_name: str, task, size: int, budget: str) -> list[dict]:
    """Each arm of a budget against the stronger of the task's no-learning baselines (a constant of the test set)."""
    if not task.baselines:
        return []
    out = []
    for arm in ARM_NAMES:
        cells = _by([r for r in results if str(r.cell.budget) == budget], task=task_name, arm=arm)
        if not cells:
            continue
        scores = {name: cells[0].metrics[metric] for name, metric in task.baselines.items() if metric in cells[0].metrics}
        if not scores:
            continue
        pick = max if task.higher_is_better else min
        control = pick(scores, key=scores.get)
        treated = [r.metrics[task.headline] for r in cells]
        v = verdict(treated, [scores[control]] * len(treated), task.higher_is_better)
        sentence = (f"{task_name}, {size} {task.budget_unit} ({budget}): {arm} − {control} (the stronger baseline) = "
                    + verdict_sentence(v, task.headline))
        out.append({"task": task_name, "budget": budget, "budget_size": size, "treated": arm, "control": control,
                    "metric": task.headline, "difference": v.difference, "sd": v.sd, "ci_low": v.ci_low,
                    "ci_high": v.ci_high, "n_seeds": v.n_seeds, "boot_low": math.nan, "boot_high": math.nan,
                    "verdict": v.word, "sentence": sentence,
                    "seed_differences": dict(zip((str(r.cell.seed) for r in cells), v.differences))})
    return out


def _cell(row: dict | None, metric: str, digits: int = 3) -> str:
    if row is None or f"{metric}_mean" not in row:
        return "—"
    mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def reported_in(rows: list[dict]) -> tuple[str, ...]:
    """The names of the test/mae_<name> metrics in aggregated rows (sorted): the table when no task data is at hand."""
    return tuple(sorted({key[len("test/mae_"):-len("_mean")] for row in rows for key in row
                         if key.startswith("test/mae_") and key.endswith("_mean")}))


def markdown(rows: list[dict], verdict_rows: list[dict], regression: TaskData | None = None, opening: str = "") -> str:
    """evaluation.md: per task a budget × arm table of the headline metric, the verdicts, and regression per reported name.

    ``regression`` (the loaded task data) names the reported MAEs, their units and the mean predictor;
    ``opening`` (the encoder saw labels) is the first line under the title.
    """
    lines = ["# Label-efficiency evaluation", "", *([opening, ""] if opening else []),
             "Test metrics, mean ± sd over seeds. Every arm of a (budget, seed) shares the label subset. Frozen arms "
             "on embeddings fit a converged probe (logistic or ridge regression on fp32 embeddings, L2 penalty by "
             "cross-validation on the subset); the other arms share head init, optimiser and schedule.", ""]
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
        for metric in task.beside:  # the task's other scores (superres: SSIM and the bicubic baseline), same layout
            lines += ["", f"{metric}:", "", f"| budget ({task.budget_unit}) | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
            for size, budget in budgets:
                cells = [_cell(next((r for r in task_rows if r["budget"] == budget and r["arm"] == a), None), metric) for a in arms]
                lines.append(f"| {size} ({budget}) | " + " | ".join(cells) + " |")
        lines += [f"\nBudget {budget} draws the same labels as budget {same}: its cells ran once and are reported under both."
                  for budget, same in sorted({(r["budget"], r["same_labels_as"]) for r in task_rows if r["same_labels_as"]})]
        lines += ["", f"Verdicts ({RULE}):", ""]
        lines += [f"- {v['sentence']}" for v in verdict_rows if v["task"] == task_name]
        lines += ["", CONDITIONING]
        if task_name == "regression":
            size, budget = budgets[-1]
            # an arm absent at the largest budget (finetune_budgets) shows "—"
            largest = {a: next((r for r in task_rows if r["budget"] == budget and r["arm"] == a), None) for a in arms}
            lines += ["", f"### regression per parameter at {size} labelled images ({budget}): test MAE", "",
                      "| parameter | " + " | ".join(arms) + " | mean predictor |", "|---|" + "---|" * (len(arms) + 1)]
            readout = regression.readout if regression else None
            for name in readout.reported if readout else reported_in(task_rows):
                unit = f" ({readout.unit_label(name)})" if readout else ""
                if readout and name in readout.derived:
                    where = readout.defined_where.get(name)
                    unit += ", derived" + (f", lenses with {where[0]} > {where[1]:g}" if where else "")
                base = (regression.baseline if regression else {}).get(f"test/mae_{name}")
                lines.append(f"| {name}{unit} | " + " | ".join(_cell(largest[a], f"test/mae_{name}", 4) for a in arms)
                             + f" | {'—' if base is None else f'{base:.4f}'} |")
            if readout:
                lines += ["", f"test/rel_mae is the mean over the {len(readout.averaged)} independent targets "
                          f"({', '.join(readout.averaged)}) of MAE / the mean predictor's MAE, each counted once"
                          + (f"; the derived rows ({', '.join(readout.derived)}) are functions of them and are not averaged."
                             if readout.derived else ".")]
        lines.append("")
    return "\n".join(lines)


def cells_table(results) -> list[dict]:
    """One flat record per cell (for evaluation_cells.csv)."""
    return [{"task": r.cell.task, "budget": str(r.cell.budget), "budget_size": r.cell.budget_size, "n_labels": r.cell.n_labels,
             "arm": r.cell.arm, "seed": r.cell.seed, **r.metrics} for r in results]
