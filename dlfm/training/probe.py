"""Linear probes on frozen embeddings, fitted to convergence, their L2 penalty chosen on the labelled subset.

One probe for every number that ranks an encoder: evaluate's frozen arms on cached embeddings, and the
training stages' own ``val/probe_macro_auc`` (``dlfm.training.evaluate.linear_probe``), which ``main`` promotes on.

A head trained for a fixed number of SGD steps ranks encoders partly by how fast it converges on them: at
50 AdamW steps a random resnet18's Model I cells read 0.05 macro AUC above a pretrained one's, at 1000 steps
0.02, and a converged logistic regression ties them (docs/results-log.md, 2026-12-04). So a frozen cell solves
its head's convex problem instead:

- classification: multinomial logistic regression (the linear head), L-BFGS to convergence;
- regression: ridge regression of the standardised targets (a linear head; the fine-tune arms keep the
  Linear-ReLU-Linear head, whose problem is not convex), in closed form.

Each picks its L2 penalty among ``PENALTIES`` by cross-validation on the labelled subset alone (stratified
k-fold for classification, ridge's exact leave-one-out for regression): no test image, and no label beyond the
budget, is seen. The arms differ only in the encoder: same subset, same penalty grid, same folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from dlfm.training.runtime import one_blas_thread

PENALTIES = tuple(10.0 ** k for k in range(-2, 6))  # L2 strengths λ tried: logistic C = 1/λ, ridge alpha = λ
FOLDS = 5  # classification: stratified folds at most (fewer when a class has fewer labels)
# The penalty is chosen on the metric the cell reports (macro one-vs-rest AUC). On log-loss, folds of two labels per
# class chose the strongest penalty and the probe ranked worse than chance: the demo's 10-label cells read 0.559
# (0.652 on AUC), one random 50-label cell 0.458 (docs/results-log.md, 2026-12-04 evening).
CV_SCORE = "roc_auc_ovr"
MAX_ITER = 5000  # L-BFGS iterations at most (standardised features converge in far fewer)
# Names the probe behind a version's val/probe_macro_auc (version tag dlfm.probe_method): numbers of two methods are
# two quantities, so main's gate scores a holder of another method again. Change it whenever the probe changes.
PROBE_METHOD = f"logistic-l2-standardised-cv{FOLDS}-macro-auc"


@dataclass(frozen=True)
class Probe:
    """A fitted frozen head: raw outputs for new embeddings, in the space ``Task.decode`` reads."""

    outputs: Callable[[np.ndarray], np.ndarray]  # classification: log-probabilities (softmax gives them back);
    # regression: the standardised targets
    train_loss: float  # the fitted head's loss on its training subset: cross-entropy, or MSE of the standardised targets
    penalty: float  # the L2 strength the cross-validation chose
    folds: int  # folds of that cross-validation (0: too few labels per class to fold, penalty 1 taken as it is)


def fit_logistic(features: np.ndarray, labels: np.ndarray, seed: int) -> Probe:
    """Multinomial logistic regression on ``features``, C = 1/λ chosen by stratified k-fold macro AUC (folds shuffled by ``seed``)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    folds = int(min(FOLDS, np.bincount(labels)[np.unique(labels)].min()))
    with one_blas_thread():
        if folds >= 2:  # strongest penalty first: each weaker fit warm-starts from the previous solution
            penalties = sorted(PENALTIES, reverse=True)
            cs = [1.0 / p for p in penalties]
            model = LogisticRegressionCV(Cs=cs, l1_ratios=(0.0,), scoring=CV_SCORE, max_iter=MAX_ITER,
                                         cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                                         use_legacy_attributes=False).fit(features, labels)
            penalty = penalties[cs.index(float(model.C_))]  # C_ is one of cs; 1 / C_ would not round-trip to the grid
        else:
            folds, penalty = 0, 1.0
            model = LogisticRegression(C=1.0 / penalty, max_iter=MAX_ITER).fit(features, labels)

    def outputs(x: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(model.predict_proba(x), np.finfo(np.float32).tiny)).astype(np.float32)

    return Probe(outputs, float(log_loss(labels, model.predict_proba(features), labels=model.classes_)), penalty, folds)


def fit_ridge(features: np.ndarray, targets: np.ndarray) -> Probe:
    """Ridge regression of standardised ``targets`` on ``features``, alpha = λ chosen by exact leave-one-out error."""
    from sklearn.linear_model import RidgeCV

    with one_blas_thread():
        model = RidgeCV(alphas=PENALTIES).fit(features, targets)
    train_loss = float(np.mean((model.predict(features) - targets) ** 2))
    return Probe(lambda x: np.asarray(model.predict(x), dtype=np.float32).reshape(len(x), -1), train_loss,
                 float(model.alpha_), len(targets))


@dataclass
class Standardizer:
    """Per-column mean and spread of a train set: the probes' features (and ridge's targets) in standard units."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> "Standardizer":
        std = values.std(axis=0)
        # A feature (e.g. a dead ReLU of a random encoder) that is constant on train must not blow
        # up on val/test, so the floor is relative to the typical spread, not just 1e-8.
        floor = max(1e-3 * float(np.median(std)), 1e-8)
        return cls(values.mean(axis=0), np.maximum(std, floor))

    def forward(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean
