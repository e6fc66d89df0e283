"""dlfm.evaluation.corpus_spread: main's numbers per pretraining corpus, the t intervals over corpora and over
evaluate's seeds, and the word that needs both."""

from __future__ import annotations

import math

import pytest

from dlfm.evaluation import corpus_spread
from dlfm.evaluation.summary import TOO_FEW

CLASSIFICATION = "classification/10/pretrained-frozen-vs-random-frozen"
REGRESSION = "regression/all/pretrained-frozen-vs-random-frozen"  # its headline is an error: lower is better


def verdict_row(key: str, per_seed: list[float]) -> dict:
    """An evaluation.json verdict row as evaluate writes it (the difference is the mean over its seeds)."""
    task, budget, pair = key.split("/")
    treated, control = pair.split("-vs-")
    return {"task": task, "budget": budget, "treated": treated, "control": control,
            "difference": sum(per_seed) / len(per_seed), "seed_differences": {str(s): d for s, d in enumerate(per_seed)}}


def draws(classification: list[list[float]], regression: list[list[float]], autoencoder: list[float],
          mae: list[float]) -> list[dict]:
    """One draw per corpus; ``classification[c]`` and ``regression[c]``: that corpus's difference per evaluate seed."""
    return [corpus_spread.draw(1000 * (i + 1), {"autoencoder": a, "mae": m},
                               [verdict_row(CLASSIFICATION, c), verdict_row(REGRESSION, r)], str(i + 1))
            for i, (c, r, a, m) in enumerate(zip(classification, regression, autoencoder, mae))]


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {row["name"]: row for row in rows}


def test_a_verdict_holds_over_corpora_only_when_both_intervals_exclude_0():
    rows = by_name(corpus_spread.spread_rows(draws(
        classification=[[0.09, 0.10, 0.11], [0.02, 0.03, 0.04], [0.07, 0.08, 0.09]],  # corpus means 0.10, 0.03, 0.08
        regression=[[-0.07, -0.06, -0.08], [-0.08, -0.09, -0.07], [-0.06, -0.05, -0.07]],
        autoencoder=[0.92, 0.93, 0.91], mae=[0.88, 0.89, 0.92])))
    classification = rows[CLASSIFICATION]
    assert classification["values"] == pytest.approx([0.10, 0.03, 0.08])
    assert classification["mean"] == pytest.approx(0.07)
    # mean ± t(0.975, 2 dof) · sd / √3 = 0.07 ± 4.303 · 0.03606 / 1.732
    assert (classification["low"], classification["high"]) == pytest.approx((0.07 - 0.08957, 0.07 + 0.08957), abs=1e-4)
    assert classification["word"] == corpus_spread.TOO_FEW_CORPORA  # +0.10 and +0.03 on two corpora: not settled
    # Seed means over corpora: −0.07, −0.0667, −0.0733: regression's error falls beyond both spreads.
    assert rows[REGRESSION]["seed_high"] < 0 and rows[REGRESSION]["high"] < 0 and rows[REGRESSION]["word"] == "better"
    assert rows["autoencoder"]["word"] == "ranked first on 2 of 3" and rows["mae"]["word"] == "ranked first on 1 of 3"


def test_the_same_seeds_on_every_corpus_cannot_settle_what_the_seeds_move():
    # Every corpus reads +0.05 on average, so the interval over corpora is a point above 0; but seed 2 (its label
    # subset, its random encoder, shared by all corpora) reads −0.05 everywhere: over the seeds, 0 is inside.
    shared = [[0.15, 0.05, -0.05]] * 3
    rows = by_name(corpus_spread.spread_rows(draws(shared, shared, [0.9] * 3, [0.8] * 3)))
    assert rows[CLASSIFICATION]["low"] == pytest.approx(0.05) and rows[CLASSIFICATION]["word"] == TOO_FEW
    assert rows[CLASSIFICATION]["seed_low"] < 0 < rows[CLASSIFICATION]["seed_high"]


def test_worse_one_corpus_and_a_corpus_that_lacks_a_number():
    worse = [[-0.05, -0.06, -0.04], [-0.06, -0.07, -0.05], [-0.055, -0.05, -0.06]]
    rows = by_name(corpus_spread.spread_rows(draws(worse, [[-d for d in c] for c in worse], [0.9] * 3, [0.8] * 3)))
    assert rows[CLASSIFICATION]["word"] == "worse" and rows[REGRESSION]["word"] == "worse"
    one = by_name(corpus_spread.spread_rows(draws([[0.1, 0.1]], [[-0.1, -0.1]], [0.9], [0.8])))[CLASSIFICATION]
    assert one["word"] == corpus_spread.ONE_CORPUS and math.isnan(one["low"])
    assert corpus_spread.metrics([one]) == {"corpora/verdict_diff_classification_10_pretrained-frozen-vs-random-frozen_mean": 0.1,
                                            "corpora/verdict_diff_classification_10_pretrained-frozen-vs-random-frozen_seed_low": 0.1,
                                            "corpora/verdict_diff_classification_10_pretrained-frozen-vs-random-frozen_seed_high": 0.1}
    partial = draws([[0.1, 0.1], [0.2, 0.2]], [[-0.1, -0.1], [-0.2, -0.2]], [0.9, 0.9], [0.8, 0.8])
    del partial[1]["verdicts"][REGRESSION]  # e.g. a budget that corpus's evaluate did not report
    row = by_name(corpus_spread.spread_rows(partial))[REGRESSION]
    assert row["values"] == [-0.1, None] and row["word"] == corpus_spread.ONE_CORPUS


def test_the_section_gives_every_corpus_and_says_what_it_covers():
    spread = {"objective": "autoencoder", "note": "",
              "draws": draws([[0.09, 0.10, 0.11], [0.02, 0.03, 0.04], [0.07, 0.08, 0.09]], [[-0.07] * 3] * 3,
                             [0.92, 0.93, 0.91], [0.88, 0.89, 0.92])}
    spread["rows"] = corpus_spread.spread_rows(spread["draws"])
    text = "\n".join(corpus_spread.markdown(spread))
    assert ("| quantity | corpus 1000 | corpus 2000 | corpus 3000 | mean ± sd | 95% t interval (corpora) | "
            "95% t interval (seeds) | over corpora |") in text
    assert ("| classification 10: pretrained-frozen − random-frozen | +0.1000 | +0.0300 | +0.0800 | +0.0700 ± 0.0361 | "
            "[-0.0196, +0.1596] | [+0.0452, +0.0948] | too few corpora to tell |") in text
    assert "| autoencoder val/probe_macro_auc | 0.9200 | 0.9300 | 0.9100 | 0.9200 ± 0.0100 | [0.8952, 0.9448] | — |" in text
    assert "autoencoder's version of each: 1 (1000), 2 (2000), 3 (3000)" in text and "mean ± 4.3 sd/√3" in text
    one = {**spread, "draws": spread["draws"][:1], "rows": corpus_spread.spread_rows(spread["draws"][:1])}
    assert "One pretraining corpus (pretrain_seed 1000)" in "\n".join(corpus_spread.markdown(one))
    noted = {**one, "note": "The evaluated encoder (supervised) did not pretrain on the corpus"}
    assert corpus_spread.markdown(noted)[2] == noted["note"]
