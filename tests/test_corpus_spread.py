"""dlfm.evaluation.corpus_spread: main's numbers per pretraining corpus, the t interval over corpora and its word."""

from __future__ import annotations

import math

import pytest

from dlfm.evaluation import corpus_spread

CLASSIFICATION = "classification/10/pretrained-frozen-vs-random-frozen"
REGRESSION = "regression/all/pretrained-frozen-vs-random-frozen"  # its headline is an error: lower is better


def draws(classification: list[float], regression: list[float], autoencoder: list[float], mae: list[float]) -> list[dict]:
    return [corpus_spread.draw(1000 * (i + 1), {"autoencoder": a, "mae": m},
                               {f"verdict_diff/{CLASSIFICATION}": c, f"verdict_diff/{REGRESSION}": r, "test/other": 1.0},
                               str(i + 1))
            for i, (c, r, a, m) in enumerate(zip(classification, regression, autoencoder, mae))]


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {row["name"]: row for row in rows}


def test_a_verdict_holds_over_corpora_only_when_the_t_interval_over_them_excludes_0():
    rows = by_name(corpus_spread.spread_rows(draws([0.10, 0.03, 0.08], [-0.07, -0.08, -0.06], [0.92, 0.93, 0.91],
                                                   [0.88, 0.89, 0.92])))
    classification = rows[CLASSIFICATION]
    assert classification["values"] == [0.10, 0.03, 0.08]
    assert classification["mean"] == pytest.approx(0.07)
    # mean ± t(0.975, 2 dof) · sd / √3 = 0.07 ± 4.303 · 0.03606 / 1.732
    assert (classification["low"], classification["high"]) == pytest.approx((0.07 - 0.08957, 0.07 + 0.08957), abs=1e-4)
    assert classification["word"] == corpus_spread.TOO_FEW_CORPORA  # +0.10 and +0.03 on two corpora: not settled
    # Regression's difference is an error: below 0 on every corpus, beyond the spread, is better.
    assert rows[REGRESSION]["word"] == "better"
    assert rows["autoencoder"]["word"] == "ranked first on 2 of 3" and rows["mae"]["word"] == "ranked first on 1 of 3"
    assert "test/other" not in rows


def test_worse_one_corpus_and_a_corpus_that_lacks_a_number():
    rows = by_name(corpus_spread.spread_rows(draws([-0.05, -0.06, -0.055], [0.02, 0.03, 0.025], [0.9] * 3, [0.8] * 3)))
    assert rows[CLASSIFICATION]["word"] == "worse" and rows[REGRESSION]["word"] == "worse"
    [one] = corpus_spread.spread_rows(draws([0.1], [-0.1], [0.9], [0.8]))[2:3]
    assert one["word"] == corpus_spread.ONE_CORPUS and math.isnan(one["low"])
    assert corpus_spread.metrics([one]) == {"corpora/verdict_diff_classification_10_pretrained-frozen-vs-random-frozen_mean": 0.1}
    partial = draws([0.1, 0.2], [-0.1, -0.2], [0.9, 0.9], [0.8, 0.8])
    del partial[1]["verdicts"][REGRESSION]  # e.g. a budget that corpus's evaluate did not report
    row = by_name(corpus_spread.spread_rows(partial))[REGRESSION]
    assert row["values"] == [-0.1, None] and row["word"] == corpus_spread.ONE_CORPUS


def test_the_section_gives_every_corpus_and_says_what_it_covers():
    spread = {"objective": "autoencoder", "note": "",
              "draws": draws([0.10, 0.03, 0.08], [-0.07, -0.08, -0.06], [0.92, 0.93, 0.91], [0.88, 0.89, 0.92])}
    spread["rows"] = corpus_spread.spread_rows(spread["draws"])
    text = "\n".join(corpus_spread.markdown(spread))
    assert "| quantity | corpus 1000 | corpus 2000 | corpus 3000 | mean ± sd | 95% t interval | over corpora |" in text
    assert ("| classification 10: pretrained-frozen − random-frozen | +0.1000 | +0.0300 | +0.0800 | +0.0700 ± 0.0361 | "
            "[-0.0196, +0.1596] | too few corpora to tell |") in text
    assert "autoencoder's version of each: 1 (1000), 2 (2000), 3 (3000)" in text and "mean ± 4.3 sd/√3" in text
    one = {**spread, "draws": spread["draws"][:1], "rows": corpus_spread.spread_rows(spread["draws"][:1])}
    assert "One pretraining corpus (pretrain_seed 1000)" in "\n".join(corpus_spread.markdown(one))
    noted = {**one, "note": "The evaluated encoder (supervised) did not pretrain on the corpus"}
    assert corpus_spread.markdown(noted)[2] == noted["note"]
