"""Figures for training stages: ROC curves, confusion matrix, learning curves, reconstructions."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import auc, roc_curve  # noqa: E402

from dlfm.training.metrics import normalized_confusion  # noqa: E402


def roc_figure(probs: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], title: str = "ROC (one-vs-rest)"):
    """One ROC curve per class plus the macro-average curve.

    The legend's macro AUC is the mean of the per-class AUCs, the very number logged as
    ``…/macro_auc``; the dashed curve is the vertical average of the class curves, whose own
    area can differ slightly, so it is not what the legend quotes.
    """
    figure, axis = plt.subplots(figsize=(5, 5))
    grid = np.linspace(0, 1, 201)
    tprs, aucs = [], []
    for index, name in enumerate(class_names):
        positives = labels == index
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, probs[:, index])
        tprs.append(np.interp(grid, fpr, tpr))
        aucs.append(auc(fpr, tpr))
        axis.plot(fpr, tpr, label=f"{name} (AUC {aucs[-1]:.3f})")
    if tprs:
        axis.plot(grid, np.mean(tprs, axis=0), "k--", label=f"macro (mean AUC {np.mean(aucs):.3f})")
    axis.plot([0, 1], [0, 1], color="grey", lw=0.5)
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def confusion_figure(probs: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], split: str = "test"):
    """Confusion matrix normalised per true class, for the named split."""
    matrix = normalized_confusion(probs, labels, len(class_names))
    figure, axis = plt.subplots(figsize=(5, 4.2))
    image = axis.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        axis.text(col, row, f"{value:.2f}", ha="center", va="center", color="white" if value > 0.5 else "black")
    axis.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xticklabels=class_names,
             yticklabels=class_names, xlabel="predicted class", ylabel="true class",
             title=f"{split} confusion (rows sum to 1, n={len(labels)})")
    figure.colorbar(image, ax=axis, label="fraction of the true class")
    figure.tight_layout()  # keeps long class names and the axis labels inside the PNG
    return figure


def learning_curves_figure(history: list[dict[str, float]]):
    """Train/val loss and, where present, val accuracy and macro AUC per epoch."""
    epochs = np.arange(1, len(history) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    # The objective's total (train|val/loss_<objective>) and the train parts; the names say which is which.
    names = [n for n in history[0] if n.split("/")[0] in ("train", "val") and n.split("/")[-1].startswith("loss_")]
    names += [n for n in ("train/recon_mse", "train/masked_mse", "train/masked_norm_mse") if n in history[0]]
    for name in names:
        if name in history[0]:
            axes[0].plot(epochs, [h[name] for h in history], marker="o", label=name)
    axes[0].set(xlabel="epoch", ylabel="loss", yscale="log", title="losses")
    axes[0].legend(fontsize=8)
    for name in ("val/accuracy", "val/macro_auc"):
        if name in history[0]:
            axes[1].plot(epochs, [h[name] for h in history], marker="o", label=name)
    for name in ("val/recon_mse", "val/masked_mse", "val/masked_norm_mse"):
        if name in history[0] and "val/accuracy" not in history[0]:
            axes[1].plot(epochs, [h[name] for h in history], marker="o", label=name)
            axes[1].plot(epochs, [h[f"{name}_mean_image"] for h in history], ls="--", label=f"{name} of the mean image")
    axes[1].set(xlabel="epoch", title="validation")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    return figure


def reconstruction_figure(originals: np.ndarray, reconstructions: np.ndarray, masks: np.ndarray | None = None,
                          split: str = "val"):
    """Rows of original | (masked input) | reconstruction | residual for a few images of ``split``.

    Every image panel shares one colour scale and every residual panel another (symmetric), each with
    a labelled colourbar, so rows compare with each other and a decoder that paints the mean ring
    instead of each image's arcs shows up at a glance. Pixels are normalised flux: each image is
    min-max scaled to [0, 1] (dimensionless), as the model sees it.
    """
    rows = len(originals)
    columns = 3 if masks is None else 4
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns + 1.2, 2 * rows + 0.6), squeeze=False)
    residuals = originals[:, 0] - reconstructions[:, 0]
    if masks is not None:
        residuals = np.where(masks[:, 0] > 0, residuals, 0.0)  # the loss sees hidden pixels only
    scale = {"cmap": "magma", "vmin": float(min(originals.min(), reconstructions.min())),
             "vmax": float(max(originals.max(), reconstructions.max()))}
    limit = float(max(np.abs(residuals).max(), 1e-6))
    residual_scale = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
    image_artist = residual_artist = None
    for row in range(rows):
        original, recon = originals[row, 0], reconstructions[row, 0]
        panels = [(original, "original", scale)]
        if masks is not None:
            panels.append((np.ma.masked_where(masks[row, 0] > 0, original), "visible input", scale))
        panels += [(recon, "reconstruction", scale),
                   (residuals[row], "residual" if masks is None else "residual (hidden)", residual_scale)]
        for col, (image, title, kwargs) in enumerate(panels):
            artist = axes[row, col].imshow(image, origin="lower", **kwargs)
            if kwargs is scale:
                image_artist = artist
            else:
                residual_artist = artist
            axes[row, col].set_axis_off()
            if row == 0:
                axes[row, col].set_title(title, fontsize=9)
    figure.suptitle(f"{split} reconstructions (n={rows}; shared colour scales)", fontsize=10)
    figure.tight_layout(rect=(0, 0, 0.86, 0.97))
    image_bar = figure.add_axes((0.88, 0.53, 0.025, 0.40))
    figure.colorbar(image_artist, cax=image_bar, label="normalised flux (per-image min-max, 0-1)")
    residual_bar = figure.add_axes((0.88, 0.07, 0.025, 0.40))
    figure.colorbar(residual_artist, cax=residual_bar, label="original - reconstruction")
    return figure
