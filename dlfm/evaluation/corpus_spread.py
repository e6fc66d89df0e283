"""The spread over pretraining corpora: main's numbers for each corpus it pretrained on, and what holds over them.

evaluate's intervals cover its seeds and the test images, both for one encoder version. ``main`` pretrains the
label-free objectives again on each of ``spread_pretrain_seeds`` and evaluates the promoted objective's version of
each corpus with the same params. This module turns those draws into one table: per quantity (each objective's probe,
each verdict difference) the value per corpus, mean ± sd, the 95 % t interval over corpora and a word. It reads
plain numbers; main logs them (``dlfm.tracking.results.SPREAD_ARTIFACT``: objective, draws, rows, note) and the
results page renders them with the same ``markdown``.
"""

from __future__ import annotations

import math

from dlfm.evaluation.summary import CONFIDENCE, TOO_FEW, confidence_interval, mean_sd
from dlfm.evaluation.tasks import TASKS

TOO_FEW_CORPORA = "too few corpora to tell"  # the interval over corpora includes 0
ONE_CORPUS = "one corpus: no spread"


def verdict_key(row: dict) -> str:
    """The name evaluate gives a verdict (its metric ``verdict_diff/<key>``, its tag ``dlfm.verdict.<key>``)."""
    return f"{row['task']}/{row['budget']}/{row['treated']}-vs-{row['control']}"


def draw(pretrain_seed: int, probes: dict[str, float], verdict_rows: list[dict], version: str) -> dict:
    """One corpus: the objectives' probes, and the verdicts (evaluation.json's rows) of the evaluated ``version``:
    each difference and its per-seed differences."""
    return {"pretrain_seed": pretrain_seed, "probes": dict(probes), "version": version,
            "verdicts": {verdict_key(row): row["difference"] for row in verdict_rows},
            "seed_differences": {verdict_key(row): row.get("seed_differences", {}) for row in verdict_rows}}


def verdict_parts(key: str) -> tuple[str, str, str, str]:
    """A verdict_key back into task, budget, treated and control."""
    task, budget, arms = key.split("/", 2)
    treated, control = arms.rsplit("-vs-", 1)
    return task, budget, treated, control


def verdict_label(key: str) -> str:
    """``classification/10/pretrained-frozen-vs-random-frozen`` → ``classification 10: pretrained-frozen − random-frozen``."""
    task, budget, treated, control = verdict_parts(key)
    return f"{task} {budget}: {treated} − {control}"


def over_corpora_word(key: str, corpus_interval: tuple[float, float], seed_interval: tuple[float, float]) -> str:
    """better/worse for the treated arm only when both intervals exclude 0 on one side (the seeds, and so the label
    subsets and the random encoder, are the same for every corpus: the interval over corpora cannot cover them)."""
    if math.isnan(corpus_interval[0]):
        return ONE_CORPUS
    if corpus_interval[0] <= 0 <= corpus_interval[1]:
        return TOO_FEW_CORPORA
    if math.isnan(seed_interval[0]) or seed_interval[0] <= 0 <= seed_interval[1] or \
            (seed_interval[0] > 0) != (corpus_interval[0] > 0):
        return TOO_FEW
    higher_is_better = TASKS[verdict_parts(key)[0]].higher_is_better
    return "better" if (corpus_interval[0] > 0) == higher_is_better else "worse"


def seed_means(draws: list[dict], key: str) -> list[float]:
    """Per evaluate seed, the difference averaged over the corpora (seeds every corpus has)."""
    per_draw = [d["seed_differences"].get(key, {}) for d in draws]
    shared = set.intersection(*(set(s) for s in per_draw)) if per_draw else set()
    return [sum(s[seed] for s in per_draw) / len(per_draw) for seed in sorted(shared, key=int)]


def spread_rows(draws: list[dict]) -> list[dict]:
    """One row per quantity over ``draws``: kind (probe | verdict), name, label, values (one per draw, None where a
    draw lacks it), mean, sd, low, high (the CONFIDENCE t interval over corpora), for verdicts seed_low and seed_high
    (the t interval over evaluate's seeds of the difference averaged over corpora), and the word."""
    rows = []
    objectives = list(dict.fromkeys(name for d in draws for name in d["probes"]))
    for objective in objectives:
        values = [d["probes"].get(objective) for d in draws]
        firsts = sum(1 for d in draws if d["probes"] and max(d["probes"], key=d["probes"].get) == objective)
        rows.append(_row("probe", objective, f"{objective} val/probe_macro_auc", values,
                         f"ranked first on {firsts} of {len(draws)}"))
    for key in list(dict.fromkeys(key for d in draws for key in d["verdicts"])):
        values = [d["verdicts"].get(key) for d in draws]
        row = _row("verdict", key, verdict_label(key), values, "")
        row["seed_low"], row["seed_high"] = confidence_interval(seed_means(draws, key))
        row["word"] = over_corpora_word(key, (row["low"], row["high"]), (row["seed_low"], row["seed_high"]))
        rows.append(row)
    return rows


def _row(kind: str, name: str, label: str, values: list, word: str) -> dict:
    present = [v for v in values if v is not None]
    mean, sd = mean_sd(present) if present else (math.nan, math.nan)
    low, high = confidence_interval(present)
    return {"kind": kind, "name": name, "label": label, "values": values, "mean": mean, "sd": sd, "low": low,
            "high": high, "word": word}


def metric_name(row: dict) -> str:
    """The parent run's metric stem of a row: ``corpora/autoencoder_val_probe_macro_auc``,
    ``corpora/verdict_diff_classification_10_pretrained-frozen-vs-random-frozen``."""
    stem = f"{row['name']}_val_probe_macro_auc" if row["kind"] == "probe" else "verdict_diff_" + row["name"].replace("/", "_")
    return f"corpora/{stem}"


def metrics(rows: list[dict]) -> dict[str, float]:
    """mean, sd and the intervals' ends of every row (NaNs left out: one corpus has no spread)."""
    out = {}
    for row in rows:
        for part in ("mean", "sd", "low", "high", "seed_low", "seed_high"):
            if part in row and not math.isnan(row[part]):
                out[f"{metric_name(row)}_{part}"] = row[part]
    return out


def _t_factor(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, n - 1))


def _number(value, signed: bool) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _interval(low, high, signed: bool) -> str:
    return "—" if low is None or math.isnan(low) else f"[{_number(low, signed)}, {_number(high, signed)}]"


def markdown(spread: dict) -> list[str]:
    """The lines of the report's and the results page's section (``spread``: SPREAD_ARTIFACT's content)."""
    draws, rows, objective = spread["draws"], spread["rows"], spread["objective"]
    seeds = [str(d["pretrain_seed"]) for d in draws]
    lines = ["## Over pretraining corpora", ""]
    if spread.get("note"):
        return lines + [spread["note"], ""]
    if len(draws) < 2:
        return lines + [f"One pretraining corpus (pretrain_seed {', '.join(seeds)}): every verdict above is conditional "
                        "on it. `-P spread_pretrain_seeds=2000,3000` pretrains the label-free objectives again on more "
                        "corpora and gives the spread over them here.", ""]
    versions = ", ".join(f"{d['version']} ({d['pretrain_seed']})" for d in draws)
    lines += [f"{len(draws)} corpora (pretrain_seed {', '.join(seeds)}; the first is the one whose encoders competed for "
              f"promotion). The label-free objectives pretrained once on each, and evaluate ran with the same params on "
              f"{objective}'s version of each: {versions}. Two {CONFIDENCE:.0%} t intervals per verdict: over the corpora "
              "(of each corpus's difference, a mean over evaluate's seeds), which covers the corpus and its pretraining "
              "run, the spread evaluate's own intervals leave out; and over evaluate's seeds (of each seed's difference, a "
              "mean over the corpora), which covers the label subsets, the heads and the random encoder: those are the "
              "same for every corpus, so the first interval cannot see them. A verdict holds over corpora only when both "
              f"exclude 0 (else {TOO_FEW_CORPORA!r} or {TOO_FEW!r}). With few corpora the first is wide (here mean ± "
              f"{_t_factor(len(draws)):.1f} sd/√{len(draws)}).", "",
              "| quantity | " + " | ".join(f"corpus {s}" for s in seeds)
              + f" | mean ± sd | {CONFIDENCE:.0%} t interval (corpora) | {CONFIDENCE:.0%} t interval (seeds) | over corpora |",
              "|---" * (len(seeds) + 5) + "|"]
    for row in rows:
        signed = row["kind"] == "verdict"
        sd = "" if math.isnan(row["sd"]) else f" ± {row['sd']:.4f}"
        lines.append(f"| {row['label']} | " + " | ".join(_number(v, signed) for v in row["values"])
                     + f" | {_number(row['mean'], signed)}{sd} | {_interval(row.get('low'), row.get('high'), signed)} | "
                     f"{_interval(row.get('seed_low'), row.get('seed_high'), signed)} | {row['word']} |")
    return lines + [""]
