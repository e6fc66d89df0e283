"""Example-image grids: one row per class, or per θE range for regression datasets."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_examples"]


def _example_rows(dataset, split: str, per_row: int, n_theta_bins: int) -> list[tuple[str, np.ndarray]]:
    """(row title, row indices) pairs: first images of each class, or of each θE bin."""
    indices = dataset.indices(split)
    if len(indices) == 0:
        indices = np.arange(len(dataset.labels))
    if dataset.task == "classification" or "theta_E" not in dataset.params.columns:
        labels = np.asarray(dataset.labels)[indices]
        return [(name, indices[labels == k][:per_row]) for k, name in enumerate(dataset.class_names)]
    theta_E = dataset.params["theta_E"].to_numpy()[indices]
    edges = np.quantile(theta_E, np.linspace(0.0, 1.0, n_theta_bins + 1))
    rows = []
    for k in range(n_theta_bins):
        upper = theta_E <= edges[k + 1] if k == n_theta_bins - 1 else theta_E < edges[k + 1]
        chosen = indices[(theta_E >= edges[k]) & upper][:per_row]
        rows.append((f"θE {edges[k]:.2f}–{edges[k + 1]:.2f}″", chosen))
    return rows


def plot_examples(dataset, per_row: int = 6, split: str = "train", n_theta_bins: int = 3) -> Figure:
    """Grid of example images (as the model sees them), one row per class or θE range."""
    rows = _example_rows(dataset, split, per_row, n_theta_bins)
    fig = Figure(figsize=(1.6 * per_row + 1.0, 1.7 * len(rows)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), per_row, squeeze=False))
    regression = dataset.task == "regression" and "theta_E" in dataset.params.columns
    for r, (title, chosen) in enumerate(rows):
        images = dataset.images_at(chosen) if len(chosen) else np.empty((0, 1, 1, 1))
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c, 0], cmap="inferno", origin="lower")
                if regression:
                    ax.set_title(f"θE={dataset.params['theta_E'].iloc[chosen[c]]:.2f}″", fontsize=7)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(title, fontsize=9)
    source = dataset.manifest.get("preset") or dataset.manifest.get("format", "dataset")
    fig.suptitle(f"{source}: {split} examples ({'normalised' if dataset.normalize else 'raw flux'})", fontsize=10)
    return fig
