"""The transfer matrix's table and figure, from the ``matrix.txt`` that benchmarks/transfer_matrix.sh writes.

Rows: what the encoder was pretrained on; columns: the instrument it is evaluated on. Each cell is the
test macro AUC (mean ± sd over seeds) of the first arm in matrix.txt (pretrained-frozen on the CPU size,
pretrained-finetune on the GPU size); the last row is the second arm of the first source (random-frozen or
scratch: same architecture and seeds whatever the source, so one row serves every source).

    python benchmarks/transfer_matrix_table.py reports/transfer_matrix/matrix.txt [--figure docs/figures/transfer_matrix.png]

Several files (one per pretraining seed, PRETRAIN_SEED=0,1,2): each cell is then the mean over files of each file's
seed mean, ± the sd over files: the spread pretraining adds, which one file's evaluate seeds do not show.
"""

from __future__ import annotations

import argparse
import re

SOURCES = ("model_ii", "model_i", "model_iii", "pretrain_multi")
TARGETS = ("model_ii", "model_i", "model_iii")
# a cell is "mean ± sd" over seeds, or a bare mean when one seed ran (its sd then reads as 0)
CELL = re.compile(r"\| \d+ \((\w+)\) \| ([\d.]+)(?: ± ([\d.]+))? \| ([\d.]+)(?: ± ([\d.]+))? \|")


def parse(text: str) -> tuple[dict, tuple[str, str]]:
    """{(source, target, budget): ((mean, sd) first arm, (mean, sd) second arm)} and the two arm names."""
    arms = re.search(r"^\| budget [^|]*\| (\S+) \| (\S+) \|", text, re.M).groups()
    parts = re.split(r"^== pretrained on (\S+), evaluated on (\S+)\n", text, flags=re.M)[1:]
    cells = {}
    for source, target, body in zip(parts[0::3], parts[1::3], parts[2::3]):
        for match in CELL.finditer(body):
            budget, a, a_sd, b, b_sd = match.groups()
            cells[(source, target, budget)] = ((float(a), float(a_sd or 0)), (float(b), float(b_sd or 0)))
    return cells, arms


def combine(runs: list[dict]) -> dict:
    """Cells of several pretraining seeds, on the cells all share: the first arm's (mean over runs, sd over runs) of each
    run's mean; the second arm as the first run has it (random or scratch encoders: the same in every run, so its
    spread is over evaluate's seeds)."""
    import statistics

    shared = set.intersection(*(set(run) for run in runs))
    combined = {}
    for key in shared:
        means = [run[key][0][0] for run in runs]
        combined[key] = ((statistics.fmean(means), statistics.stdev(means) if len(means) > 1 else 0.0), runs[0][key][1])
    return combined


def multi_versus_single(runs: list[dict], budget: str) -> str:
    """Issue 27 item 5's test, one line per instrument: pretrain_multi minus that instrument's own row, paired by file
    (pretraining seed), with evaluate's verdict rule (95% t interval over files); 'above' / 'below' only when it excludes 0."""
    from dlfm.evaluation.summary import verdict

    words = {"better": "above", "worse": "below"}
    lines = []
    for target in TARGETS:
        paired = [(run[("pretrain_multi", target, budget)][0][0], run[(target, target, budget)][0][0]) for run in runs
                  if ("pretrain_multi", target, budget) in run and (target, target, budget) in run]
        if not paired:
            continue
        multi, own = zip(*paired)
        v = verdict(list(multi), list(own), higher_is_better=True)
        interval = (f", 95% CI [{v.ci_low:+.3f}, {v.ci_high:+.3f}] → {words.get(v.word, 'within the spread')}"
                    if v.n_seeds > 1 else " (one pretraining seed: no interval)")
        lines.append(f"- {target}: pretrain_multi − {target} = {v.difference:+.3f} over {v.n_seeds} pretraining seed(s) "
                     f"({', '.join(f'{m - o:+.3f}' for m, o in paired)}){interval}")
    return "\n".join(lines)


def markdown(cells: dict, arms: tuple[str, str], budget: str) -> str:
    """One budget's matrix: a row per source, the comparison arm last."""
    sources = [s for s in SOURCES if any(k[0] == s for k in cells)]
    lines = [f"| pretrained on ({arms[0]}) | " + " | ".join(f"→ {t}" for t in TARGETS) + " |", "|---" * 4 + "|"]
    for source in sources:
        row = [cells.get((source, t, budget)) for t in TARGETS]
        lines.append(f"| {source} | " + " | ".join(f"{c[0][0]:.3f} ± {c[0][1]:.3f}" if c else "—" for c in row) + " |")
    first = [cells.get((sources[0], t, budget)) for t in TARGETS]
    lines.append(f"| none ({arms[1]}) | " + " | ".join(f"{c[1][0]:.3f} ± {c[1][1]:.3f}" if c else "—" for c in first) + " |")
    return "\n".join(lines)


def figure(cells: dict, arms: tuple[str, str], path: str, runs: int = 1) -> None:
    """Heatmaps of the first arm minus the second, per budget (green: pretraining on that row helps that column)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    budgets = sorted({k[2] for k in cells}, key=lambda b: (b == "all", b))
    sources = [s for s in SOURCES if any(k[0] == s for k in cells)]
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.6 * len(budgets), 3.6), squeeze=False, sharey=True)
    for ax, budget in zip(axes[0], budgets):
        diff = np.full((len(sources), len(TARGETS)), np.nan)
        for i, source in enumerate(sources):
            for j, target in enumerate(TARGETS):
                if (source, target, budget) in cells:
                    (a, _), (b, _) = cells[(source, target, budget)]
                    diff[i, j] = a - b
        image = ax.imshow(diff, cmap="RdYlGn", vmin=-0.15, vmax=0.15)
        for (i, j), value in np.ndenumerate(diff):
            ax.text(j, i, "—" if np.isnan(value) else f"{value:+.3f}", ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(TARGETS)), TARGETS, rotation=20)
        ax.set_yticks(range(len(sources)), sources)
        ax.set_xlabel("evaluated on")
        ax.set_title(f"{budget} labels per class" if budget != "all" else "all labels")
    axes[0][0].set_ylabel("pretrained on")
    fig.colorbar(image, ax=axes[0].tolist(), label=f"test macro AUC, {arms[0]} − {arms[1]}")
    fig.suptitle("Cross-instrument transfer (mean over seeds)" if runs == 1 else
                 f"Cross-instrument transfer (mean over {runs} pretraining seeds × evaluate's seeds)", y=1.04)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("matrix", nargs="+", help="matrix.txt, or one per pretraining seed")
    parser.add_argument("--figure", default="")
    args = parser.parse_args()
    parsed = [parse(open(path).read()) for path in args.matrix]
    arms = parsed[0][1]
    cells = parsed[0][0] if len(parsed) == 1 else combine([run for run, _ in parsed])
    for budget in sorted({k[2] for k in cells}, key=lambda b: (b == "all", b)):
        print(f"\n{budget} labels per class:\n" if budget != "all" else "\nall labels:\n")
        print(markdown(cells, arms, budget))
        if any(key[0] == "pretrain_multi" for key in cells):
            print(f"\n{multi_versus_single([run for run, _ in parsed], budget)}")
    if args.figure:
        figure(cells, arms, args.figure, runs=len(parsed))


if __name__ == "__main__":
    main()
