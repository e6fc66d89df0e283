"""Lens-parameter regression pieces and the transfer config (pure torch/numpy; no MLflow).

Transfer runs through dlfm.evaluation (one loop for frozen heads and fine-tuning). Here live the
regression targets, their physical read-out and MAE, the feature/target standardiser, the frozen
embedding pass and the random-encoder init. Targets are standardised; angles are learned through
(e1, e2) and (γ1, γ2) and turned back, so the periodic φ and ψ (period π) never need a
discontinuous regression target.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Callable, ContextManager

import numpy as np
import torch
from torch import nn

from dlfm.errors import ConfigError, DatasetError

TARGETS = ("theta_E", "src_x", "src_y", "e1", "e2", "gamma1", "gamma2")  # learned, standardised
REPORTED = (  # MAE names, physical units: arcsec, arcsec, arcsec, -, -, -, -, -, -, rad, -, rad
    "theta_E", "src_x", "src_y", "e1", "e2", "gamma1", "gamma2", "ellipticity", "q", "phi", "gamma_ext", "psi_ext",
)
UNITS = {"theta_E": "arcsec", "src_x": "arcsec", "src_y": "arcsec", "phi": "rad", "psi_ext": "rad"}


def unit_label(name: str) -> str:
    """The unit of a reported parameter's MAE for tables: arcsec, rad, or dimensionless (e1, e2, q, shear, …)."""
    return UNITS.get(name, "dimensionless")


@dataclass(frozen=True)
class TransferConfig:
    encoder_stage: str = "production"  # registry alias to load: models:/dlfm-encoder@<stage>
    encoder_uri: str = ""  # any models:/… URI; overrides encoder_stage when given
    dataset: str = "regression"  # preset (simulated and cached if missing) or a dataset dir with lens parameters
    epochs: int = 60  # head training epochs (cheap: the head trains on cached embeddings)
    lr: float = 1e-3  # AdamW learning rate of the head
    weight_decay: float = 1e-4  # AdamW weight decay
    batch_size: int = 128  # embeddings per step
    seeds: str = "0,1,2"  # comma-separated seeds; each gives one pretrained and one random child run
    finetune: bool = False  # false: frozen encoders (the ablation); true: both trained end to end (pretrained-finetune vs scratch)
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto (bf16 on CUDA GPUs with it and on CPUs with AMX/AVX-512 BF16, else fp32) | fp32 | bf16
    sim_n_train: int = 1200  # when `dataset` is a preset not cached yet: its split sizes
    sim_n_val: int = 300
    sim_n_test: int = 300
    experiment_name: str = ""  # MLflow experiment of a run dlfm starts (empty: MLFLOW_EXPERIMENT_NAME, else deeplense-fm); not an MLproject param: `mlflow run --experiment-name` files those runs

    @property
    def seed_list(self) -> list[int]:
        """The parsed seeds."""
        try:
            seeds = [int(s) for s in str(self.seeds).replace(" ", "").split(",") if s != ""]
        except ValueError:
            raise ConfigError(f"seeds must be comma-separated integers such as 0,1,2, got {self.seeds!r}") from None
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must be distinct comma-separated integers such as 0,1,2, got {self.seeds!r}")
        return seeds

    def validate(self) -> None:
        """Raise ConfigError for out-of-range values before any work."""
        for name in ("epochs", "batch_size", "sim_n_train", "sim_n_val", "sim_n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.encoder_uri and not self.encoder_uri.startswith("models:/"):
            raise ConfigError(f"encoder_uri must be a models:/dlfm-encoder/<version> URI, got {self.encoder_uri!r}")
        self.seed_list
        self.evaluate_config().validate()  # precision and the rest, checked by the config that runs them

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def arm_names(self) -> tuple[str, str]:
        """(pretrained arm, random arm) of dlfm.evaluation that this transfer compares."""
        return ("pretrained-finetune", "scratch") if self.finetune else ("pretrained-frozen", "random-frozen")

    def evaluate_config(self):
        """The same run as an EvaluateConfig: the regression task, every label, these two arms."""
        from dlfm.evaluation import EvaluateConfig

        return EvaluateConfig(
            encoder_stage=self.encoder_stage, encoder_uri=self.encoder_uri, tasks="regression", regression_dataset=self.dataset,
            budgets="all", arms=",".join(self.arm_names), seeds=self.seeds, epochs=self.epochs, min_steps=0,
            batch_size=self.batch_size, lr=self.lr, encoder_lr=self.lr,  # transfer fine-tunes with one learning rate
            weight_decay=self.weight_decay, device=self.device, precision=self.precision, sim_n_train=self.sim_n_train, sim_n_val=self.sim_n_val,
            sim_n_test=self.sim_n_test, sim_seed=0, experiment_name=self.experiment_name)


def regression_targets(params, split_name: str = "dataset") -> np.ndarray:
    """(n, 7) float64 array of the learned targets; DatasetError if the table lacks them."""
    missing = [name for name in TARGETS if name not in params.columns]
    if missing:
        raise DatasetError(f"{split_name} has no lens-parameter columns {missing}; transfer needs the regression "
                           "preset or a dataset simulated with vary_lens=true")
    return params[list(TARGETS)].to_numpy(dtype=np.float64)


def check_lens_parameters_vary(train_targets: np.ndarray, dataset_name: str) -> None:
    """A dataset whose macro-lens parameters are fixed cannot test lens-parameter regression."""
    constant = [name for name, std in zip(TARGETS, train_targets.std(axis=0)) if std < 1e-9]
    if constant:
        raise DatasetError(f"dataset {dataset_name!r} has fixed lens parameters {constant}; transfer needs the "
                           "regression preset or a dataset simulated with vary_lens=true")


def random_init_seed(seed: int) -> int:
    """The torch seed of the random arm: a stream apart from training seeds, so it never equals a pretrained init."""
    return 1_000_003 * (seed + 1)


def random_encoder_like(encoder, seed: int):
    """Same architecture as ``encoder``, fresh seeded random weights (nothing loaded)."""
    from dlfm.models import create_encoder

    torch.manual_seed(random_init_seed(seed))
    return create_encoder(encoder.name, **{k: v for k, v in encoder.arch_config.items() if k != "name"})


@torch.no_grad()
def embed(encoder: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256,
          autocast: Callable[[], ContextManager] = contextlib.nullcontext,
          safe_point: Callable[[], None] = lambda: None) -> np.ndarray:
    """Float32 embeddings of all images by a frozen encoder in eval mode (BatchNorm uses running stats)."""
    encoder.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        with autocast():
            out.append(encoder(batch).float().cpu())
        safe_point()  # a stop request raises between batches
    return torch.cat(out).numpy()


@dataclass
class Standardizer:
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


def circular_abs_diff(a: np.ndarray, b: np.ndarray, period: float = math.pi) -> np.ndarray:
    """|a − b| on a circle of the given period: never more than period/2."""
    diff = np.mod(np.asarray(a) - np.asarray(b), period)
    return np.minimum(diff, period - diff)


def physical_parameters(targets: np.ndarray) -> dict[str, np.ndarray]:
    """The 7 learned targets plus the derived |e|, q, φ (rad), γ_ext and ψ_ext (rad)."""
    values = {name: targets[:, i] for i, name in enumerate(TARGETS)}
    ellipticity = np.hypot(values["e1"], values["e2"])
    values["ellipticity"] = ellipticity
    values["q"] = (1 - ellipticity) / (1 + ellipticity)  # lenstronomy: |e| = (1 − q) / (1 + q)
    values["phi"] = np.mod(0.5 * np.arctan2(values["e2"], values["e1"]), math.pi)
    values["gamma_ext"] = np.hypot(values["gamma1"], values["gamma2"])
    values["psi_ext"] = np.mod(0.5 * np.arctan2(values["gamma2"], values["gamma1"]), math.pi)
    return values


def mae_per_parameter(predicted: np.ndarray, true: np.ndarray, prefix: str) -> dict[str, float]:
    """``{prefix}/mae_<param>`` in physical units; φ and ψ as circular differences (period π)."""
    pred, truth = physical_parameters(predicted), physical_parameters(true)
    metrics = {}
    for name in REPORTED:
        if name in ("phi", "psi_ext"):
            error = circular_abs_diff(pred[name], truth[name])
        else:
            error = np.abs(pred[name] - truth[name])
        metrics[f"{prefix}/mae_{name}"] = float(error.mean())
    return metrics
