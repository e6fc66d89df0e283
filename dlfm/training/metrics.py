"""Classification metrics with the names every stage shares (val/accuracy, val/macro_auc, …)."""

from __future__ import annotations

import numpy as np


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], prefix: str) -> dict[str, float]:
    """Accuracy, one-vs-rest AUC per class and their macro mean."""
    from sklearn.metrics import roc_auc_score  # lazy: sklearn costs seconds at start-up
    metrics = {f"{prefix}/accuracy": float((probs.argmax(1) == labels).mean())}
    aucs = []
    for index, name in enumerate(class_names):
        positives = labels == index
        # AUC is undefined when a split has only one class present; skip rather than fake it.
        if positives.all() or not positives.any():
            continue
        auc = float(roc_auc_score(positives, probs[:, index]))
        metrics[f"{prefix}/auc_{name}"] = auc
        aucs.append(auc)
    if aucs:
        metrics[f"{prefix}/macro_auc"] = float(np.mean(aucs))
    return metrics


def normalized_confusion(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix with each true-class row summing to 1."""
    from sklearn.metrics import confusion_matrix
    matrix = confusion_matrix(labels, probs.argmax(1), labels=list(range(num_classes))).astype(float)
    return matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
