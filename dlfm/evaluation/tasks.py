"""The downstream tasks: their typed data, label-budget subsets, heads, losses and test metrics.

A registry (``TASKS``) rather than if/elif: the grid asks a task for everything task-specific.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dlfm.errors import ConfigError
from dlfm.evaluation.config import ALL
from dlfm.models.heads import ClassificationHead, RegressionHead
from dlfm.evaluation.regression import Readout, choose_readout
from dlfm.training.probe import Standardizer

SUBSET_STREAM = 0x5EED  # the label subsets' own seed stream, apart from head init and random encoders


@dataclass(frozen=True)
class Split:
    """Normalised images and their targets (class indices, or the regression readout's columns in their own units)."""

    images: np.ndarray  # (n, 1, H, W) float32, min-max normalised per image (superres: the bicubic-upsampled degraded image)
    targets: np.ndarray  # classification: (n,) int64; regression: (n, k) float64 in TaskData.readout.columns order;
    # superres: (n, 1, H, W) float32, the high-resolution images through the input's own min-max map


@dataclass(frozen=True)
class TaskData:
    """Everything one task trains and tests on; replaces the string-keyed ``data`` dict of old."""

    task: str  # a TASKS key
    dataset: str  # what the user passed (preset or path), for messages
    digest: str  # the dataset digest
    train: Split  # the labelled pool that budgets draw from
    test: Split  # held-out split every cell is scored on
    class_names: tuple[str, ...]  # classification classes; one name for the tasks whose budgets count images in total
    baseline: dict[str, float]  # the no-skill baseline's test metrics: regression, MAE of the train mean; superres, bicubic
    readout: Readout | None = None  # regression: which columns are learned and which MAEs are reported, in which units


@dataclass(frozen=True)
class Targets:
    """Training targets of one labelled subset, and how to turn outputs back into physical values."""

    values: torch.Tensor  # what the loss compares against (class indices, standardised parameters, or images)
    scaler: Standardizer | None  # regression: fitted on the subset only (its labels are all the arm may see)


def draw_subset(budget: int | str, seed: int, labels: np.ndarray | None = None, n: int | None = None) -> np.ndarray:
    """Sorted train indices of a label budget: ``budget`` per class (stratified) when ``labels`` is given, else in total.

    Depends only on (budget, seed, pool), so every arm gets the same subset; subsets are nested
    (the 25-label subset lies inside the 100-label one) because each takes a prefix of one permutation.
    """
    rng = np.random.default_rng([seed, SUBSET_STREAM])
    if labels is None:
        order = rng.permutation(n)
        return np.sort(order if budget == ALL else order[:budget])
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        order = members[rng.permutation(len(members))]
        chosen.append(order if budget == ALL else order[:budget])
    return np.sort(np.concatenate(chosen))


class Task:
    """What every task shares unless it says otherwise: budgets count train images in total, a head on the
    pooled embedding, encoder → head end to end in the fine-tune arms, every test prediction kept."""

    head_input = "embedding"  # what the head reads: the pooled embedding (frozen arms: cached once) or the encoder's "levels"
    frozen_cost = 0.02  # a frozen arm's work per sample relative to fine-tuning (a head on cached embeddings: ~50x cheaper)
    beside: tuple[str, ...] = ()  # metrics evaluation.md tables beside the headline
    reference = ""  # a baseline metric (in TaskData.baseline) drawn as a line in the headline's panel
    baselines: dict[str, str] = {}  # no-learning baselines (name → metric in TaskData.baseline) verdicts compare heads with

    def subset(self, data: TaskData, budget: int | str, seed: int) -> np.ndarray:
        return draw_subset(budget, seed, n=len(data.train.targets))

    def available(self, data: TaskData) -> int:
        return len(data.train.targets)

    def pool_sizes(self, data: TaskData) -> tuple[int, ...]:
        """The one pool that budgets count in."""
        return (len(data.train.targets),)

    def network(self, encoder: nn.Module, head: nn.Module) -> nn.Module:
        """The end-to-end model of the fine-tune arms: images → embedding → head."""
        return nn.Sequential(encoder, head)

    def keep(self, predictions: np.ndarray, data: TaskData) -> np.ndarray:
        """What a cell keeps of its test predictions (predictions.npy, and what ``metrics`` scores): all of them."""
        return predictions

    def resample(self, data: TaskData, rng: np.random.Generator) -> np.ndarray:
        """One bootstrap draw of test indices (with replacement, as many as the test split)."""
        n = len(data.test.targets)
        return rng.integers(0, n, n)

    def headline_on(self, kept: np.ndarray, data: TaskData, index: np.ndarray) -> float:
        """The headline metric of kept test predictions restricted to ``index`` (a bootstrap draw)."""
        from dataclasses import replace

        subset = replace(data, test=Split(data.test.images[:0], data.test.targets[index]))
        return self.metrics(kept[index], subset)[self.headline]


class ClassificationTask(Task):
    """Substructure classification on a held-out model_ii set: a linear head, cross-entropy, AUCs."""

    name = "classification"
    dataset_field = "classification_dataset"  # the EvaluateConfig field naming its dataset
    headline = "test/macro_auc"  # the metric of figures and verdicts
    higher_is_better = True
    budget_unit = "labelled images per class"

    def load(self, dataset, spec: str) -> TaskData:
        """Typed train/test data of a classification dataset."""
        if len(dataset.class_names) < 2:
            raise ConfigError(f"classification_dataset {spec!r} has one class; pass a model_ii/model_i/model_iii set")
        splits = {s: Split(dataset.get_images(s), dataset.get_labels(s)) for s in ("train", "test")}
        return TaskData(self.name, spec, dataset.digest, splits["train"], splits["test"], tuple(dataset.class_names), {})

    def subset(self, data: TaskData, budget: int | str, seed: int) -> np.ndarray:
        return draw_subset(budget, seed, labels=data.train.targets)

    def available(self, data: TaskData) -> int:
        """The largest numeric budget this pool allows (the smallest class)."""
        return int(np.bincount(data.train.targets).min())

    def resample(self, data: TaskData, rng: np.random.Generator) -> np.ndarray:
        """A bootstrap draw stratified by class: every class keeps its test count, so every AUC stays defined."""
        labels = data.test.targets
        return np.concatenate([rng.choice(np.flatnonzero(labels == cls), int((labels == cls).sum()))
                               for cls in np.unique(labels)])

    def headline_on(self, kept: np.ndarray, data: TaskData, index: np.ndarray) -> float:
        """Macro one-vs-rest AUC on a bootstrap draw: the Mann-Whitney form (average ranks for ties), which equals
        sklearn's roc_auc_score and costs ~50x less, since a verdict scores hundreds of draws."""
        from scipy.stats import rankdata

        probs, labels = kept[index], data.test.targets[index]
        aucs = []
        for cls in range(probs.shape[1]):
            positives = labels == cls
            n_pos = int(positives.sum())
            if 0 < n_pos < len(labels):
                ranks = rankdata(probs[:, cls])
                aucs.append((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(labels) - n_pos)))
        return float(np.mean(aucs))

    def pool_sizes(self, data: TaskData) -> tuple[int, ...]:
        """Labelled train images per class, in the order ``draw_subset`` walks the classes."""
        return tuple(int(n) for n in np.unique(data.train.targets, return_counts=True)[1])

    def head(self, encoder: nn.Module, data: TaskData) -> nn.Module:
        return ClassificationHead(encoder.embed_dim, len(data.class_names))

    def targets(self, data: TaskData, index: np.ndarray) -> Targets:
        return Targets(torch.as_tensor(data.train.targets[index], dtype=torch.long), None)

    def loss(self, outputs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, values)

    def probe(self, features: np.ndarray, targets: Targets, seed: int):
        """The frozen arms' head on embeddings, converged: logistic regression, penalty by stratified k-fold."""
        from dlfm.training.probe import fit_logistic

        return fit_logistic(features, targets.values.numpy(), seed)

    def decode(self, outputs: np.ndarray, targets: Targets) -> np.ndarray:
        """Logits → class probabilities."""
        return torch.softmax(torch.as_tensor(outputs), dim=1).numpy()

    def metrics(self, predictions: np.ndarray, data: TaskData) -> dict[str, float]:
        """test/accuracy, test/macro_auc and test/auc_<class>."""
        from dlfm.training.metrics import classification_metrics

        return classification_metrics(predictions, data.test.targets, data.class_names, "test")


class RegressionTask(Task):
    """Regression: the seed's MLP head on standardised targets, MAE per reported name (the dataset's readout)."""

    name = "regression"
    dataset_field = "regression_dataset"
    headline = "test/rel_mae"  # mean over the independent targets of MAE / MAE of predicting the train mean (1 = no skill)
    higher_is_better = False
    budget_unit = "labelled images"
    # beside stays empty: the per-parameter MAEs have their own table (summary.markdown)

    def load(self, dataset, spec: str) -> TaskData:
        """Typed train/test data of a dataset whose targets vary; its readout is chosen here, once."""
        params = {s: dataset.get_params(s) for s in ("train", "test")}
        readout = choose_readout(params["train"], dataset.manifest, spec)
        y = {s: readout.targets(params[s], spec) for s in ("train", "test")}
        readout.check_vary(y["train"], spec)
        baseline = readout.mae(np.repeat(y["train"].mean(0, keepdims=True), len(y["test"]), 0), y["test"], "test")
        splits = {s: Split(dataset.get_images(s), y[s]) for s in ("train", "test")}
        return TaskData(self.name, spec, dataset.digest, splits["train"], splits["test"], ("lens",), baseline, readout)

    def head(self, encoder: nn.Module, data: TaskData) -> nn.Module:
        return RegressionHead(encoder.embed_dim, data.train.targets.shape[1])

    def targets(self, data: TaskData, index: np.ndarray) -> Targets:
        scaler = Standardizer.fit(data.train.targets[index])
        return Targets(torch.as_tensor(scaler.forward(data.train.targets[index]), dtype=torch.float32), scaler)

    def loss(self, outputs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(outputs, values)

    def probe(self, features: np.ndarray, targets: Targets, seed: int):
        """The frozen arms' head on embeddings, converged: ridge regression, penalty by leave-one-out (``seed`` unused)."""
        from dlfm.training.probe import fit_ridge

        return fit_ridge(features, targets.values.numpy())

    def decode(self, outputs: np.ndarray, targets: Targets) -> np.ndarray:
        """Standardised outputs → the learned columns in their own units."""
        return targets.scaler.inverse(outputs.astype(np.float64))

    def metrics(self, predictions: np.ndarray, data: TaskData) -> dict[str, float]:
        """test/mae_<name> per reported name (the readout's units) and their no-skill-relative mean."""
        metrics = data.readout.mae(predictions, data.test.targets, "test")
        metrics["test/rel_mae"] = data.readout.rel_mae(metrics, data.baseline)
        return metrics


class SuperResolutionTask(Task):
    """16 → 64 px super-resolution of held-out images degraded by their own instrument (``dlfm.evaluation.superres``).

    The head reads the encoder's feature maps, not the pooled embedding, so it consumes
    ``forward_levels``: frozen arms run the frozen encoder (eval mode, no gradient) at every step
    instead of a cache (the maps of a stride-4 ViT are ~50 kB an image), fine-tune arms train
    encoder and head end to end. The encoder takes the bicubic-upsampled 64-px input; the head adds
    a residual to that bicubic image, so its untrained output is the bicubic baseline.
    """

    name = "superres"
    dataset_field = "superres_dataset"
    headline = "test/psnr"  # mean over test images of the per-image PSNR (dB), data range 1
    higher_is_better = True
    budget_unit = "training images"  # low/high-resolution pairs, in total
    head_input = "levels"
    frozen_cost = 0.35  # a frozen arm still runs the encoder forward each step (no backward): about a third
    beside = ("test/ssim", "test/bicubic_psnr", "test/bicubic_ssim", "test/bicubic_affine_psnr", "test/bicubic_affine_ssim")
    reference = "test/bicubic_affine_psnr"
    # the no-learning baselines a head must beat (verdicts: the stronger of them), name → metric in TaskData.baseline
    baselines = {"bicubic": "test/bicubic_psnr", "bicubic-affine": "test/bicubic_affine_psnr"}

    def load(self, dataset, spec: str) -> TaskData:
        """Degraded inputs and 64-px targets of a simulated dataset, and the bicubic baseline's test scores."""
        from dlfm.evaluation import superres
        from dlfm.simulation import PRESETS

        preset = PRESETS.get(dataset.manifest.get("preset", ""))
        if preset is None:
            raise ConfigError(f"superres_dataset {spec!r} names no simulation preset in its manifest, so its instrument's "
                              f"noise is unknown; pass a preset ({', '.join(PRESETS)}) or a dataset dir dlfm simulated")
        if dataset.image_size % superres.SCALE:
            raise ConfigError(f"superres_dataset {spec!r} has {dataset.image_size}-px images, which do not divide by "
                              f"{superres.SCALE}; pass a 64-px preset such as model_ii or model_iii")
        seed = int(dataset.manifest.get("seed", 0))
        splits = {s: Split(*superres.degraded_pair(dataset.images[dataset.indices(s)], preset, seed, s))
                  for s in ("train", "test")}
        baseline = superres.baselines(splits["train"], splits["test"])
        return TaskData(self.name, spec, dataset.digest, splits["train"], splits["test"], ("image",), baseline)

    def head(self, encoder: nn.Module, data: TaskData) -> nn.Module:
        from dlfm.models.heads import SuperResolutionHead

        return SuperResolutionHead(encoder.levels)

    def network(self, encoder: nn.Module, head: nn.Module) -> nn.Module:
        """Bicubic image → encoder levels → head: the same for frozen (a ``FrozenEncoder``) and fine-tune arms."""
        from dlfm.models.heads import SuperResolutionNet

        return SuperResolutionNet(encoder, head)

    def targets(self, data: TaskData, index: np.ndarray) -> Targets:
        return Targets(torch.from_numpy(np.ascontiguousarray(data.train.targets[index])), None)

    def loss(self, outputs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(outputs, values)

    def decode(self, outputs: np.ndarray, targets: Targets) -> np.ndarray:
        """Network outputs, as they are: the targets share the input's units and may leave [0, 1], so nothing is clipped."""
        return outputs

    def keep(self, predictions: np.ndarray, data: TaskData) -> np.ndarray:
        """Per test image (n, 2) PSNR (dB) and SSIM, not the 64-px images (~5 MB a cell at 300 images)."""
        from dlfm.evaluation import superres

        return superres.image_scores(predictions, data.test.targets)

    def metrics(self, kept: np.ndarray, data: TaskData) -> dict[str, float]:
        """test/psnr (dB), test/ssim (means of the kept per-image scores), and beside them the bicubic baseline's."""
        from dlfm.evaluation import superres

        return {**superres.mean_scores(kept), **data.baseline}


TASKS = {task.name: task for task in (ClassificationTask(), RegressionTask(), SuperResolutionTask())}
