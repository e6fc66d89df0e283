"""Pretrained-vs-random transfer to lens-parameter regression (pure torch/numpy; no MLflow).

Both encoders are frozen in eval mode. Each embeds the dataset once (the embedding cache);
the same head, optimiser, epochs and seed then train on those embeddings. Targets are
standardised; angles are learned through (e1, e2) and (γ1, γ2) and turned back, so the
periodic φ and ψ (period π) never need a discontinuous regression target.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from dlfm.constants import DEFAULT_EXPERIMENT
from dlfm.errors import ConfigError, DatasetError
from dlfm.models.heads import RegressionHead

TARGETS = ("theta_E", "src_x", "src_y", "e1", "e2", "gamma1", "gamma2")  # learned, standardised
REPORTED = (  # MAE names, physical units: arcsec, arcsec, arcsec, -, -, -, -, -, -, rad, -, rad
    "theta_E", "src_x", "src_y", "e1", "e2", "gamma1", "gamma2", "ellipticity", "q", "phi", "gamma_ext", "psi_ext",
)
UNITS = {"theta_E": "arcsec", "src_x": "arcsec", "src_y": "arcsec", "phi": "rad", "psi_ext": "rad"}


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
    finetune: bool = False  # false: frozen encoders (the ablation); true: train encoder and head end to end
    device: str = "auto"  # auto | cpu | cuda | mps
    sim_n_train: int = 1200  # when `dataset` is a preset not cached yet: its split sizes
    sim_n_val: int = 300
    sim_n_test: int = 300
    experiment_name: str = DEFAULT_EXPERIMENT  # MLflow experiment

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
        if self.encoder_uri and not self.encoder_uri.startswith(("models:/", "runs:/")):
            raise ConfigError(f"encoder_uri must be a models:/ or runs:/ URI, got {self.encoder_uri!r}")
        self.seed_list

    def to_dict(self) -> dict:
        return asdict(self)


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
def embed(encoder: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Embeddings of all images by a frozen encoder in eval mode (BatchNorm uses running stats)."""
    encoder.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        out.append(encoder(batch).float().cpu())
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


@dataclass
class HeadResult:
    head: RegressionHead
    history: list[dict[str, float]]  # train/loss and val/loss (standardised MSE) per epoch
    best_epoch: int


def train_head(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, config: TransferConfig,
               seed: int, device: torch.device) -> HeadResult:
    """Train a fresh RegressionHead (seeded) on standardised embeddings and targets; keep the best val epoch."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    head = RegressionHead(train_x.shape[1], train_y.shape[1]).to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train_x) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    tx, ty = torch.as_tensor(train_x, dtype=torch.float32, device=device), torch.as_tensor(train_y, dtype=torch.float32, device=device)
    vx, vy = torch.as_tensor(val_x, dtype=torch.float32, device=device), torch.as_tensor(val_y, dtype=torch.float32, device=device)
    history, best, best_epoch, best_state = [], math.inf, 0, None
    for epoch in range(1, config.epochs + 1):
        head.train()
        total = 0.0
        for index in torch.randperm(len(tx), generator=generator).split(config.batch_size):
            index = index.to(device)
            loss = nn.functional.mse_loss(head(tx[index]), ty[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(index)
        head.eval()
        with torch.no_grad():
            val_loss = nn.functional.mse_loss(head(vx), vy).item()
        history.append({"train/loss": total / len(tx), "val/loss": val_loss})
        if val_loss < best:
            best, best_epoch, best_state = val_loss, epoch, copy.deepcopy(head.state_dict())
    head.load_state_dict(best_state)
    return HeadResult(head.eval(), history, best_epoch)


@torch.no_grad()
def predict(head: RegressionHead, x: np.ndarray, device: torch.device) -> np.ndarray:
    """Standardised predictions of a trained head."""
    return head(torch.as_tensor(x, dtype=torch.float32, device=device)).cpu().numpy().astype(np.float64)


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


def finetune_encoder_and_head(encoder: nn.Module, train_images: np.ndarray, train_y: np.ndarray, val_images: np.ndarray,
                              val_y: np.ndarray, config: TransferConfig, seed: int, device: torch.device):
    """finetune=true: train encoder and head end to end on images (no embedding cache)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    head = RegressionHead(encoder.embed_dim, train_y.shape[1])
    model = nn.Sequential(encoder, head).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history, best, best_epoch, best_state = [], math.inf, 0, None
    ty = torch.as_tensor(train_y, dtype=torch.float32)
    for epoch in range(1, config.epochs + 1):
        model.train()
        total = 0.0
        for index in torch.randperm(len(ty), generator=generator).split(config.batch_size):
            images = torch.from_numpy(train_images[index.numpy()]).to(device)
            loss = nn.functional.mse_loss(model(images), ty[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        val_pred = embed_and_predict(model, val_images, device)
        val_loss = float(np.mean((val_pred - val_y) ** 2))
        history.append({"train/loss": total / len(ty), "val/loss": val_loss})
        if val_loss < best:
            best, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model.eval(), history, best_epoch


@torch.no_grad()
def embed_and_predict(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Predictions of an encoder+head model on images, in eval mode."""
    model.eval()
    out = [model(torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size])).to(device)).cpu()
           for s in range(0, len(images), batch_size)]
    return torch.cat(out).numpy().astype(np.float64)
