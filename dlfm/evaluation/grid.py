"""The grid: (task, budget, arm, seed) cells, an embedding cache and a converged probe for the frozen arms, one loop for the rest.

Cost rules (issue 13): a frozen arm never re-embeds per budget or seed: each encoder embeds each
image once (``EmbeddingCache``); the random encoder of a seed is built once and serves both
random-frozen and scratch; fine-tune arms run only at the budgets asked for. A task whose head
reads feature maps (superres, ``head_input = "levels"``) is the exception: its frozen arms run
the frozen encoder forward at every step, since caching maps would cost up to ~50 kB an image.
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, ContextManager

import numpy as np
import torch
from torch import nn

from dlfm.evaluation.config import ALL, EvaluateConfig
from dlfm.evaluation.fit import Schedule, fit, predict
from dlfm.evaluation.tasks import TASKS, TaskData
from dlfm.training.interrupt import StopRequest
from dlfm.evaluation.embedding import embed, random_encoder_like
from dlfm.training.probe import Standardizer
from dlfm.models.heads import FrozenEncoder


@dataclass(frozen=True)
class Arm:
    """One way of using an encoder downstream."""

    name: str
    encoder: str  # "pretrained" (the registry version) or "random" (same architecture, fresh seeded init)
    frozen: bool  # true: the encoder in eval mode, never updated (a head on cached embeddings or on its maps); false: end to end


ARMS = {arm.name: arm for arm in (
    Arm("pretrained-frozen", "pretrained", frozen=True),
    Arm("random-frozen", "random", frozen=True),
    Arm("pretrained-finetune", "pretrained", frozen=False),
    Arm("scratch", "random", frozen=False),
)}


@dataclass(frozen=True)
class Cell:
    """One child run of the grid."""

    task: str
    budget: int | str  # as asked: an integer or "all"
    arm: str
    seed: int
    n_labels: int  # labelled train images the cell used (in total)
    budget_size: int  # the budget as a number: labels per class (classification) or in total; "all" resolved
    same_labels_as: int | str | None = None  # a smaller budget with the very same label subset: its result, reported here too


@dataclass
class EmbeddingCache:
    """Standardised train/test embeddings per (task, encoder key), computed once; ``enabled=False`` is the naive loop.

    Embeddings are computed in fp32 whatever the run's precision: rounding to bf16 cost a random vit_small's
    features 0.13 probe AUC (0.878 → 0.752, docs/results-log.md), so a bf16 cache would move the random floor
    that every frozen margin is measured from. Embedding is one forward pass per image: fp32 costs little.
    """

    device: torch.device
    enabled: bool = True
    safe_point: Callable[[], None] = lambda: None  # runs between embedding batches: a stop request raises there
    store: dict = field(default_factory=dict)
    embedded: Counter = field(default_factory=Counter)  # images pushed through each encoder key (for tests, benchmarks)

    def features(self, data: TaskData, key: str, encoder: nn.Module) -> dict[str, np.ndarray]:
        """{"train", "test"} features of ``data`` by ``encoder``; the scaler is fitted on the unlabelled train pool."""
        if self.enabled and (data.task, key) in self.store:
            return self.store[(data.task, key)]
        raw = {split: embed(encoder, getattr(data, split).images, self.device, safe_point=self.safe_point)
               for split in ("train", "test")}
        self.embedded[(data.task, key)] += sum(len(v) for v in raw.values())
        scaler = Standardizer.fit(raw["train"])
        features = {split: scaler.forward(values).astype(np.float32) for split, values in raw.items()}
        if self.enabled:
            self.store[(data.task, key)] = features
        return features


class Encoders:
    """The pretrained encoder, and one random encoder per seed built on first use."""

    def __init__(self, pretrained: nn.Module):
        self.pretrained = pretrained
        self.random: dict[int, nn.Module] = {}

    def get(self, kind: str, seed: int) -> tuple[str, nn.Module]:
        """(cache key, encoder) of an arm's encoder kind at a seed."""
        if kind == "pretrained":
            return "pretrained", self.pretrained
        if seed not in self.random:
            self.random[seed] = random_encoder_like(self.pretrained, seed)
        return f"random-{seed}", self.random[seed]


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    metrics: dict[str, float]  # test/… metrics
    history: list[float]  # mean training loss per epoch (a probe: its one converged loss)
    predictions: np.ndarray  # test predictions as the task keeps them (``keep``): class probabilities, lens parameters
    # in physical units, or per-image super-resolution scores
    head: dict = field(default_factory=dict)  # what a probe chose (probe_penalty, probe_folds); logged as params


def head_init_seed(seed: int) -> int:
    """Torch seed of the head's init: the same for every arm of a seed, so arms differ only in the encoder."""
    return 7919 * (seed + 1)


def run_cell(cell: Cell, index: np.ndarray, data: TaskData, encoders: Encoders, cache: EmbeddingCache,
             config: EvaluateConfig, device: torch.device,
             autocast: Callable[[], ContextManager] = contextlib.nullcontext,
             safe_point: Callable[[], None] = lambda: None) -> CellResult:
    """Train one arm on one label subset and score it on the test split.

    A frozen arm whose head reads the pooled embedding fits the task's converged probe on cached embeddings
    (``dlfm.training.probe``); every other arm trains with the shared loop (``fit``).
    """
    task, arm = TASKS[cell.task], ARMS[cell.arm]
    key, encoder = encoders.get(arm.encoder, cell.seed)
    targets = task.targets(data, index)
    if arm.frozen and task.head_input == "embedding":  # pooled embeddings: computed once per encoder (cache)
        features = cache.features(data, key, encoder)
        probe = task.probe(features["train"][index], targets, cell.seed)
        predictions = task.decode(probe.outputs(features["test"]), targets)
        kept = task.keep(predictions, data)
        return CellResult(cell, task.metrics(kept, data), [probe.train_loss], kept,
                          {"probe_penalty": probe.penalty, "probe_folds": probe.folds})
    if not arm.frozen:
        encoder = copy.deepcopy(encoder)  # the cached original stays untouched for the other arms
    torch.manual_seed(head_init_seed(cell.seed))
    head = task.head(encoder, data)
    groups = [{"params": list(head.parameters()), "lr": config.lr}]
    # images in: end to end, or (a head on feature maps, too large to cache) the frozen encoder at every step
    model = task.network(FrozenEncoder(encoder) if arm.frozen else encoder, head)
    inputs = torch.from_numpy(np.ascontiguousarray(data.train.images[index]))
    if not arm.frozen:
        groups.insert(0, {"params": list(encoder.parameters()), "lr": config.encoder_lr})
    schedule = Schedule(config.epochs, config.min_steps, config.batch_size, config.weight_decay)
    history = fit(model, groups, inputs, targets.values, task.loss, schedule, cell.seed, device, autocast, safe_point)
    predictions = task.decode(predict(model, data.test.images, device, autocast=autocast, safe_point=safe_point), targets)
    kept = task.keep(predictions, data)  # superres scores each image here, once; metrics average that
    return CellResult(cell, task.metrics(kept, data), history, kept)


def same_subset_budgets(budgets: list[int | str], pool_sizes: tuple[int, ...]) -> dict[int | str, int | str]:
    """{budget: the first earlier budget that draws the very same labels}, e.g. {"all": 400} at 400 images per class.

    A subset takes a prefix of one permutation per class (``draw_subset``), so two budgets draw the same
    labels exactly when min(budget, class size) agrees for every class, whatever the seed.
    """
    first, same = {}, {}
    for budget in budgets:
        effective = tuple(size if budget == ALL else min(budget, size) for size in pool_sizes)
        if effective in first:
            same[budget] = first[effective]
        else:
            first[effective] = budget
    return same


def plan(config: EvaluateConfig, tasks: dict[str, TaskData]) -> list[tuple[Cell, np.ndarray]]:
    """Every cell to run with its label subset: drawn once per (task, budget, seed) and shared by every arm.

    A budget whose subset equals a smaller one's is not planned (``same_subset_budgets``); ``run_grid``
    reports that one's results under both budgets.
    """
    cells = []
    for seed in config.seed_list:
        for name, data in tasks.items():
            same = same_subset_budgets(config.budget_list, TASKS[name].pool_sizes(data))
            finetune = {same.get(b, b) for b in config.finetune_budget_list}  # asked at a twin: run at the budget that runs
            for budget in config.budget_list:
                if budget in same:
                    continue
                index = TASKS[name].subset(data, budget, seed)
                size = len(index) // len(data.class_names)  # regression has the one class "lens"
                for arm in config.arm_list:
                    if ARMS[arm].frozen or budget in finetune:
                        cells.append((Cell(name, budget, arm, seed, len(index), size), index))
    return cells


def cell_key(cell: Cell) -> tuple[str, str, str, int]:
    """(task, arm, budget, seed): what names a cell across runs (the budget as logged: "25" or "all")."""
    return cell.task, cell.arm, str(cell.budget), int(cell.seed)


def cell_cost(cell: Cell, config: EvaluateConfig) -> float:
    """Relative work of a cell (images through a network), for sharing cells out evenly; only ratios matter."""
    schedule = Schedule(config.epochs, config.min_steps, config.batch_size, config.weight_decay)
    images = schedule.steps(cell.n_labels) * min(config.batch_size, cell.n_labels)
    return images if not ARMS[cell.arm].frozen else TASKS[cell.task].frozen_cost * images


def owners(cells: list[Cell], config: EvaluateConfig, workers: int) -> list[int]:
    """The worker (0..workers-1) of each cell: longest first to the least loaded, ties by grid order.

    Depends only on the grid and ``workers``, so every worker (or torchrun rank) computes the same split
    without talking to the others; each cell has exactly one owner.
    """
    load, owner = [0.0] * workers, [0] * len(cells)
    for i in sorted(range(len(cells)), key=lambda i: (-cell_cost(cells[i], config), i)):
        owner[i] = min(range(workers), key=lambda w: (load[w], w))
        load[owner[i]] += cell_cost(cells[i], config)
    return owner


def run_grid(config: EvaluateConfig, tasks: dict[str, TaskData], pretrained: nn.Module, device: torch.device,
             on_cell: Callable[[Cell, Callable[[], CellResult]], CellResult] | None = None,
             cache: EmbeddingCache | None = None,
             autocast: Callable[[], ContextManager] = contextlib.nullcontext,
             stop: StopRequest | None = None,
             cells: list[tuple[Cell, np.ndarray]] | None = None) -> list[CellResult]:
    """Run ``cells`` (default: every cell of the plan); ``on_cell(cell, compute)`` wraps each (the stage opens a child run there).

    ``autocast`` (``Runtime.autocast`` of the resolved precision) wraps the loop's forward passes: head and
    fine-tune training, prediction (the frozen arms' cached embeddings are fp32: ``EmbeddingCache``). ``stop`` is checked between cells and after every batch:
    a requested stop raises GridInterrupted there (a KeyboardInterrupt), never in the middle of a store write.
    """
    stop = stop or StopRequest()
    full_plan = cells is None  # a worker's share leaves the renamed copies to whoever collects every cell
    cells = plan(config, tasks) if cells is None else cells
    encoders = Encoders(pretrained)
    results: list[CellResult] = []

    def safe_point() -> None:
        stop.check(len(results), len(cells))

    cache = cache if cache is not None else EmbeddingCache(device)
    cache.safe_point = safe_point
    on_cell = on_cell or (lambda cell, compute: compute())
    for cell, index in cells:
        safe_point()
        results.append(on_cell(cell, lambda c=cell, i=index: run_cell(c, i, tasks[c.task], encoders, cache, config, device,
                                                                      autocast, safe_point)))
    return results + reported_twice(results, config, tasks) if full_plan else results


def reported_twice(results: list[CellResult], config: EvaluateConfig, tasks: dict[str, TaskData]) -> list[CellResult]:
    """The results of budgets whose labels equal a smaller budget's: that budget's cells, renamed (run once)."""
    copies = []
    for name, data in tasks.items():
        for budget, same in same_subset_budgets(config.budget_list, TASKS[name].pool_sizes(data)).items():
            copies += [replace(r, cell=replace(r.cell, budget=budget, same_labels_as=same))
                       for r in results if r.cell.task == name and r.cell.budget == same]
    return copies
