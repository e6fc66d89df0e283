"""Anomaly figures: one histogram per anomaly kind, normal against anomalous, for each score."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MEANING = {"reconstruction": "worse reconstructed"}  # what a higher score says; the density scores: less like the corpus


def score_histograms_figure(kind: str, normal: dict[str, np.ndarray], anomalous: dict[str, np.ndarray],
                            aurocs: dict[str, float]):
    """Score distributions of held-out normal images and one anomaly kind (all seeds pooled), AUROC in the titles."""
    names = list(normal)
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for axis, score in zip(axes[0], names):
        both = np.r_[normal[score], anomalous[score]]
        bins = np.linspace(float(both.min()), float(both.max()) + 1e-9, 40)
        axis.hist(normal[score], bins=bins, alpha=0.6, color="tab:blue", label="normal (model_ii)")
        axis.hist(anomalous[score], bins=bins, alpha=0.6, color="tab:red", label=kind)
        axis.set(xlabel=f"{score} score (higher = {MEANING.get(score, 'less like the corpus')})", ylabel="images",
                 title=f"{kind}: AUROC {aurocs[score]:.3f} (mean over seeds)")
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
