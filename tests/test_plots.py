"""Figures say what they show: the ROC legend quotes the logged metric, axes and splits are labelled."""

from __future__ import annotations

import numpy as np

from dlfm.plots.training import confusion_figure, roc_figure
from dlfm.plots.tune import param_vs_objective_figure
from dlfm.training.metrics import classification_metrics

CLASSES = ("no_sub", "cdm", "axion")


def noisy_predictions(seed: int = 0, n: int = 90):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    probs = rng.dirichlet([1, 1, 1], n)
    probs[np.arange(n), labels] += 0.4
    return probs / probs.sum(1, keepdims=True), labels


def test_roc_legend_macro_auc_equals_logged_metric():
    probs, labels = noisy_predictions()
    logged = classification_metrics(probs, labels, CLASSES, "test")["test/macro_auc"]
    legend = [text.get_text() for text in roc_figure(probs, labels, CLASSES).axes[0].get_legend().get_texts()]
    assert f"macro (mean AUC {logged:.3f})" in legend


def test_confusion_names_true_axis_and_split():
    probs, labels = noisy_predictions(1)
    axis = confusion_figure(probs, labels, CLASSES, split="val").axes[0]
    assert axis.get_ylabel() == "true class" and axis.get_xlabel() == "predicted class"
    assert axis.get_title().startswith("val ")


def test_tune_plot_labels_ticks_as_plain_numbers():
    records = [{"number": i, "state": "COMPLETE", "value": 0.5, "params": {"recon_weight": w}, "intermediate": {1: 0.5}}
               for i, w in enumerate([0.01, 0.2, 3.0])]
    figure = param_vs_objective_figure(records)
    figure.canvas.draw()
    labels = {t.get_text() for t in figure.axes[0].get_xticklabels(minor=False) + figure.axes[0].get_xticklabels(minor=True)}
    assert {"0.01", "0.1", "1", "0.2", "0.5"} <= labels


def test_corpus_spread_figure_shows_each_corpus_both_intervals_and_the_word():
    from dlfm.evaluation import corpus_spread
    from dlfm.plots.evaluation import corpus_spread_figure

    def row(task, budget, per_seed):
        return {"task": task, "budget": budget, "treated": "pretrained-frozen", "control": "random-frozen",
                "difference": sum(per_seed) / len(per_seed), "seed_differences": dict(enumerate(map(float, per_seed)))}

    draws = [corpus_spread.draw(seed, {"autoencoder": 0.9}, [row("classification", "10", [0.1 + k, 0.2 + k]),
                                                             row("regression", "all", [-0.1 - k, -0.2 - k])], str(k))
             for k, seed in ((0.0, 1000), (0.02, 2000), (0.05, 3000))]
    for d in draws:  # evaluation.json's keys are strings
        d["seed_differences"] = {key: {str(s): v for s, v in values.items()} for key, values in d["seed_differences"].items()}
    rows = corpus_spread.spread_rows(draws)
    figure = corpus_spread_figure({"objective": "autoencoder", "draws": draws, "rows": rows})
    classification, regression = figure.axes
    assert classification.get_title().startswith("classification") and "lower is better" in regression.get_title()
    [word] = [t.get_text() for t in classification.texts]
    assert word == next(r["word"] for r in rows if r["name"].startswith("classification"))
    assert len([line for line in classification.lines if line.get_marker() == "o"]) == 3  # one dot per corpus
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend[:3] == ["corpus 1000", "corpus 2000", "corpus 3000"] and "over evaluate's seeds" in legend[-1]
