"""The frozen arms' converged probe: it reaches the optimum whatever the loop's schedule, picks its penalty from the
labelled subset alone, and reads fp32 embeddings under a bf16 run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlfm.sources import load_dataset
from dlfm.evaluation import TASKS, EvaluateConfig, run_grid
from dlfm.evaluation.grid import EmbeddingCache
from dlfm.training.probe import PENALTIES, Standardizer, fit_logistic, fit_ridge
from dlfm.models import create_encoder


@pytest.fixture(scope="module")
def classification(tiny_classification_dir):
    return TASKS["classification"].load(load_dataset(tiny_classification_dir), "tiny-cls")


def blobs(n_per_class: int, dim: int, seed: int, shift: float = 1.0):
    """Three Gaussian classes, each shifted along its own axis: linearly separable in expectation, noisy per sample."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    features = rng.normal(size=(len(labels), dim)).astype(np.float32)
    features[np.arange(len(labels)), labels] += shift
    return features, labels


def test_logistic_probe_reaches_the_optimum_of_its_penalty():
    from sklearn.linear_model import LogisticRegression

    features, labels = blobs(40, 16, seed=0)
    probe = fit_logistic(features, labels, seed=0)
    assert probe.penalty in PENALTIES and probe.folds == 5
    # the same problem solved independently at the chosen penalty, to a tight tolerance: the same predictions
    exact = LogisticRegression(C=1 / probe.penalty, tol=1e-10, max_iter=100_000).fit(features, labels)
    test, _ = blobs(20, 16, seed=1)
    np.testing.assert_allclose(np.exp(probe.outputs(test)), exact.predict_proba(test), atol=2e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logistic_probe_picks_the_penalty_with_the_best_cross_validated_macro_auc(seed):
    """The penalty is chosen on the metric a cell reports (macro one-vs-rest AUC), over stratified folds of the subset."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    features, labels = blobs(10, 64, seed=seed, shift=1.5)  # few labels, many dimensions: the penalty matters
    scores = {}
    for penalty in sorted(PENALTIES, reverse=True):
        folds = StratifiedKFold(5, shuffle=True, random_state=seed).split(features, labels)
        scores[penalty] = np.mean([roc_auc_score(labels[test], LogisticRegression(C=1 / penalty, max_iter=5000)
                                                 .fit(features[train], labels[train]).predict_proba(features[test]),
                                                 multi_class="ovr") for train, test in folds])
    best = max(scores.values())
    assert scores[fit_logistic(features, labels, seed=seed).penalty] >= best - 1e-3, scores


def test_logistic_probe_with_one_label_per_class_cannot_fold_and_says_so():
    features, labels = blobs(1, 8, seed=0, shift=3.0)
    probe = fit_logistic(features, labels, seed=0)
    assert probe.folds == 0 and probe.penalty == 1.0
    assert np.exp(probe.outputs(features)).argmax(1).tolist() == [0, 1, 2]


def test_ridge_probe_recovers_a_linear_target_and_shrinks_noise():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 10))
    weights = rng.normal(size=(10, 2))
    targets = features @ weights + 0.01 * rng.normal(size=(200, 2))
    probe = fit_ridge(features, targets)
    assert probe.train_loss < 1e-3 and probe.penalty == min(PENALTIES)
    np.testing.assert_allclose(probe.outputs(features[:5]), targets[:5], atol=0.05)
    assert fit_ridge(features, rng.normal(size=(200, 2))).penalty > probe.penalty


def test_frozen_cells_ignore_the_loop_schedule_and_keep_their_probe_choice(classification):
    """A frozen arm's result is the probe's optimum: the loop's epochs, steps and lr do not move it."""
    tasks = {"classification": classification}

    def frozen(**schedule):
        torch.manual_seed(0)
        config = EvaluateConfig(tasks="classification", budgets="5", seeds="0", arms="pretrained-frozen,random-frozen",
                                **schedule)
        return run_grid(config, tasks, create_encoder("conv4"), torch.device("cpu"))

    short, long = frozen(epochs=1, min_steps=1, lr=1e-5), frozen(epochs=50, min_steps=2000, lr=1e-2)
    for a, b in zip(short, long):
        assert a.metrics == b.metrics
        np.testing.assert_array_equal(a.predictions, b.predictions)
        assert a.head["probe_penalty"] in PENALTIES and a.head["probe_folds"] == 5 and len(a.history) == 1


def test_cached_embeddings_are_fp32_under_a_bf16_run(classification):
    from dlfm.evaluation.embedding import embed
    from dlfm.training.runtime import autocast_for

    torch.manual_seed(0)
    encoder = create_encoder("conv4")
    cache = EmbeddingCache(torch.device("cpu"))
    config = EvaluateConfig(tasks="classification", budgets="5", seeds="0", arms="pretrained-frozen", precision="bf16")
    run_grid(config, {"classification": classification}, encoder, torch.device("cpu"), cache=cache,
             autocast=autocast_for(torch.device("cpu"), "bf16"))
    fp32 = embed(encoder, classification.test.images, torch.device("cpu"))
    bf16 = embed(encoder, classification.test.images, torch.device("cpu"), autocast=autocast_for(torch.device("cpu"), "bf16"))
    assert not np.allclose(fp32, bf16, rtol=1e-4, atol=1e-5), "bf16 must round the embeddings for this test to mean anything"
    train = embed(encoder, classification.train.images, torch.device("cpu"))
    standardised = Standardizer.fit(train).forward(fp32)
    np.testing.assert_allclose(cache.store[("classification", "pretrained")]["test"], standardised, rtol=1e-3, atol=1e-3)


def test_the_stages_probe_is_evaluates_frozen_probe():
    """main promotes on the training stages' val/probe_macro_auc: it must be evaluate's probe, not a fixed C = 1."""
    from dlfm.training.context import EvalOutput
    from dlfm.training.evaluate import linear_probe

    train_x, train_y = blobs(12, 64, seed=0, shift=0.7)  # few labels, many features: CV picks a strong penalty
    val_x, val_y = blobs(30, 64, seed=1, shift=0.7)
    train_x, val_x = 3 * train_x + 1, 3 * val_x + 1  # not standardised: the probe standardises on train
    stage = linear_probe(EvalOutput({}, None, train_y, train_x), {"val": EvalOutput({}, None, val_y, val_x)},
                         ("a", "b", "c"), seed=0)["val"]
    scaler = Standardizer.fit(train_x)
    probe = fit_logistic(scaler.forward(train_x), train_y, seed=0)
    frozen = torch.softmax(torch.from_numpy(probe.outputs(scaler.forward(val_x))), dim=1).numpy()
    np.testing.assert_allclose(stage.probs, frozen, rtol=1e-4, atol=1e-6)
    assert probe.penalty > 1.0  # the old stage probe's C = 1 would have scored another model
