"""The evaluate stage's config: which encoder, which tasks, label budgets, arms, seeds and schedule."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace

from dlfm.errors import ConfigError
from dlfm.params import param_from_string
from dlfm.training.config import PRECISIONS

ARM_NAMES = ("pretrained-frozen", "random-frozen", "pretrained-finetune", "scratch")  # order of tables and legends
TASK_NAMES = ("classification", "regression", "superres")
ALL = "all"  # the budget that uses every labelled train image
# How frozen arms on embeddings train (dlfm.training.probe: penalty chosen on CV macro AUC); part of every cell's digest.
FROZEN_HEAD = "probe-cv-auc"
RESUME_IGNORED = ("resume", "workers", "device", "experiment_name")  # may differ between a run and its resume


def parse_seeds(text: str) -> list[int]:
    """Distinct comma-separated integer seeds (``0,1,2``); ConfigError in one line otherwise."""
    try:
        seeds = [int(s) for s in str(text).replace(" ", "").split(",") if s != ""]
    except ValueError:
        raise ConfigError(f"seeds must be comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct comma-separated integers such as 0,1,2, got {text!r}")
    return seeds


def _parse_list(name: str, text: str, example: str) -> list[str]:
    items = [item for item in str(text).replace(" ", "").split(",") if item]
    if not items or len(set(items)) != len(items):
        raise ConfigError(f"{name} must be distinct comma-separated values such as {example}, got {text!r}")
    return items


@dataclass(frozen=True)
class EvaluateConfig:
    encoder_stage: str = "production"  # registry alias to evaluate: models:/dlfm-encoder@<stage>
    encoder_uri: str = ""  # any models:/dlfm-encoder/<version> (or @alias) URI; overrides encoder_stage
    tasks: str = "classification,regression"  # comma-separated: classification (model_ii), regression (lens parameters or CSV columns), superres (16 -> 64 px)
    classification_dataset: str = "model_ii"  # preset (simulated with sim_seed, held out from pretraining) or a dataset dir
    regression_dataset: str = "regression"  # preset or a dataset dir: varying lens parameters, or an imported set's numeric CSV columns
    superres_dataset: str = "model_ii"  # a 64-px preset (or a dataset dir dlfm simulated): its images degraded by its own instrument
    budgets: str = "25,100,400,all"  # labelled train images: per class for classification, in total for regression and superres
    arms: str = ",".join(ARM_NAMES)  # which of pretrained-frozen, random-frozen, pretrained-finetune, scratch to run
    finetune_budgets: str = ""  # budgets (of `budgets`) at which the fine-tune arms run; empty: every budget (fine-tuning is the grid's cost)
    seeds: str = "0,1,2"  # each seed draws its own label subset (shared by every arm), head init and random encoder
    epochs: int = 20  # passes over the labelled subset of every arm the loop trains (fine-tune arms; superres frozen); frozen heads on embeddings are fitted to convergence
    min_steps: int = 50  # optimiser steps at least, so tiny budgets still train (every arm the loop trains)
    batch_size: int = 32  # labelled images (or embeddings) per step
    lr: float = 1e-3  # AdamW learning rate of the head (every arm the loop trains)
    encoder_lr: float = 1e-4  # AdamW learning rate of the encoder in the fine-tune arms (pretrained-finetune, scratch)
    weight_decay: float = 1e-4  # AdamW weight decay (every arm the loop trains)
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto (bf16 on CUDA GPUs with it and on CPUs with AMX/AVX-512 BF16, else fp32) | fp32 | bf16
    sim_n_train: int = 1200  # preset datasets not cached yet: split sizes (classification: balanced over classes)
    sim_n_val: int = 300
    sim_n_test: int = 300
    sim_seed: int = 1  # preset datasets: simulation seed; not the pretraining seed (0), so the sets are held out
    resume: str = ""  # id of a KILLED/FAILED evaluate run to continue: its FINISHED cells are reused, the rest recomputed
    workers: int = 1  # processes sharing the cells on this machine (each its own GPU, or its share of the CPU threads)
    experiment_name: str = ""  # MLflow experiment of a run dlfm starts (empty: MLFLOW_EXPERIMENT_NAME, else deeplense-fm); not an MLproject param: `mlflow run --experiment-name` files those runs

    @property
    def task_list(self) -> list[str]:
        """The parsed tasks, in TASK_NAMES order."""
        tasks = _parse_list("tasks", self.tasks, "classification,regression,superres")
        unknown = [t for t in tasks if t not in TASK_NAMES]
        if unknown:
            raise ConfigError(f"unknown task {unknown[0]!r}; tasks are {', '.join(TASK_NAMES)}")
        return [t for t in TASK_NAMES if t in tasks]

    @property
    def arm_list(self) -> list[str]:
        """The parsed arms, in ARM_NAMES order."""
        arms = _parse_list("arms", self.arms, ",".join(ARM_NAMES))
        unknown = [a for a in arms if a not in ARM_NAMES]
        if unknown:
            raise ConfigError(f"unknown arm {unknown[0]!r}; arms are {', '.join(ARM_NAMES)}")
        return [a for a in ARM_NAMES if a in arms]

    @property
    def seed_list(self) -> list[int]:
        """The parsed seeds."""
        try:
            return [int(s) for s in _parse_list("seeds", self.seeds, "0,1,2")]
        except ValueError:
            raise ConfigError(f"seeds must be comma-separated integers such as 0,1,2, got {self.seeds!r}") from None

    @property
    def budget_list(self) -> list[int | str]:
        """The parsed budgets, ascending, ``"all"`` last."""
        budgets = _parse_list("budgets", self.budgets, "25,100,400,all")
        numbers = []
        for budget in budgets:
            if budget == ALL:
                continue
            if not budget.isdigit() or int(budget) <= 0:
                raise ConfigError(f"budgets must be positive integers or 'all' (e.g. 25,100,400,all), got {budget!r}")
            numbers.append(int(budget))
        return sorted(numbers) + ([ALL] if ALL in budgets else [])

    @property
    def finetune_budget_list(self) -> list[int | str]:
        """The budgets at which pretrained-finetune and scratch run (every budget when finetune_budgets is empty)."""
        if not str(self.finetune_budgets).strip():
            return self.budget_list
        wanted = _parse_list("finetune_budgets", self.finetune_budgets, "100")
        unknown = [b for b in wanted if b not in [str(x) for x in self.budget_list]]
        if unknown:
            raise ConfigError(f"finetune_budgets must be among budgets ({self.budgets}), got {unknown[0]!r}")
        return [b for b in self.budget_list if str(b) in wanted]

    def validate(self) -> None:
        """Raise ConfigError for any bad value before any work."""
        for name in ("epochs", "batch_size", "workers", "sim_n_train", "sim_n_val", "sim_n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.min_steps, int) or self.min_steps < 0:
            raise ConfigError(f"min_steps must be an integer >= 0, got {self.min_steps!r}")
        for name in ("lr", "encoder_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.encoder_uri and not self.encoder_uri.startswith("models:/"):
            raise ConfigError(f"encoder_uri must be a models:/dlfm-encoder/<version> URI, got {self.encoder_uri!r}")
        self.task_list, self.arm_list, self.seed_list, self.budget_list, self.finetune_budget_list  # noqa: B018 - each parses and checks

    def to_dict(self) -> dict:
        return asdict(self)

    def cell_digest(self) -> str:
        """What every cell of this grid was computed under: the config less the fields a resume may change."""
        kept = {k: v for k, v in sorted(self.to_dict().items()) if k not in RESUME_IGNORED}
        kept["frozen_head"] = FROZEN_HEAD  # cells of an older frozen head are not this grid's: a resume recomputes them
        return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]

    def resumed_from(self, saved: dict[str, str]) -> "EvaluateConfig":
        """This config continuing the run whose params are ``saved`` (strings, as MLflow returns them).

        ``mlflow run -P resume=<id>`` passes every other param at its default, so a field left at its
        default takes the run's value; any other difference is refused in one line that names it.
        """
        merged, differing = {}, []
        for spec in fields(self):
            if spec.name in RESUME_IGNORED or spec.name not in saved:
                continue
            mine, theirs = getattr(self, spec.name), _typed(spec.default, saved[spec.name])
            if mine == theirs or mine == spec.default:
                merged[spec.name] = theirs
            else:
                differing.append(f"{spec.name}={mine!r} (run {self.resume}: {theirs!r})")
        if differing:
            raise ConfigError(f"resume={self.resume} was evaluated with another config: {', '.join(differing)}; "
                              "resume with the same params (workers and device may change) or start a new run")
        return replace(self, **merged)


def _typed(default, text: str):
    """A param string back in the type of its field's default (the one converter, in dlfm.training.config)."""
    return param_from_string(default, text)
