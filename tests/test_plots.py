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
