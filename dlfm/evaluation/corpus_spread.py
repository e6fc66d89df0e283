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

from dlfm.evaluation.summary import CONFIDENCE, confidence_interval, mean_sd
from dlfm.evaluation.tasks import TASKS

VERDICT_PREFIX = "verdict_diff/"  # evaluate's metric of a verdict's difference: verdict_diff/<task>/<budget>/<arms>
TOO_FEW_CORPORA = "too few corpora to tell"  # the interval over corpora includes 0
ONE_CORPUS = "one corpus: no spread"


def draw(pretrain_seed: int, probes: dict[str, float], evaluate_metrics: dict[str, float], version: str) -> dict:
    """One corpus: the objectives' probes and the verdict differences of the evaluated ``version``."""
    verdicts = {name[len(VERDICT_PREFIX):]: value for name, value in sorted(evaluate_metrics.items())
                if name.startswith(VERDICT_PREFIX)}
    return {"pretrain_seed": pretrain_seed, "probes": dict(probes), "verdicts": verdicts, "version": version}


def verdict_label(key: str) -> str:
    """``classification/10/pretrained-frozen-vs-random-frozen`` → ``classification 10: pretrained-frozen − random-frozen``."""
    task, budget, arms = key.split("/", 2)
    return f"{task} {budget}: {arms.replace('-vs-', ' − ')}"


def over_corpora_word(key: str, low: float, high: float) -> str:
    """better/worse for the treated arm when the interval over corpora excludes 0, else TOO_FEW_CORPORA."""
    if math.isnan(low):
        return ONE_CORPUS
    if low <= 0 <= high:
        return TOO_FEW_CORPORA
    higher_is_better = TASKS[key.split("/", 1)[0]].higher_is_better
    return "better" if (low > 0) == higher_is_better else "worse"


def spread_rows(draws: list[dict]) -> list[dict]:
    """One row per quantity over ``draws``: kind (probe | verdict), name, label, values (one per draw, None where a
    draw lacks it), mean, sd, low, high (the CONFIDENCE t interval over corpora) and the word."""
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
        row["word"] = over_corpora_word(key, row["low"], row["high"])
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
    """mean, sd and the interval's ends of every row (NaNs left out: one corpus has no spread)."""
    out = {}
    for row in rows:
        for part in ("mean", "sd", "low", "high"):
            if not math.isnan(row[part]):
                out[f"{metric_name(row)}_{part}"] = row[part]
    return out


def _t_factor(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, n - 1))


def _number(value, signed: bool) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


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
              f"{objective}'s version of each: {versions}. A verdict holds over corpora only when the "
              f"{CONFIDENCE:.0%} t interval of its difference over the corpora excludes 0; that interval is the spread "
              f"evaluate's own intervals leave out, and with few corpora it is wide (here mean ± {_t_factor(len(draws)):.1f} "
              f"sd/√{len(draws)}).", "",
              "| quantity | " + " | ".join(f"corpus {s}" for s in seeds) + f" | mean ± sd | {CONFIDENCE:.0%} t interval | over corpora |",
              "|---" * (len(seeds) + 4) + "|"]
    for row in rows:
        signed = row["kind"] == "verdict"
        sd = "" if math.isnan(row["sd"]) else f" ± {row['sd']:.4f}"
        interval = "—" if math.isnan(row["low"]) else f"[{_number(row['low'], signed)}, {_number(row['high'], signed)}]"
        lines.append(f"| {row['label']} | " + " | ".join(_number(v, signed) for v in row["values"])
                     + f" | {_number(row['mean'], signed)}{sd} | {interval} | {row['word']} |")
    return lines + [""]
