"""The transfer config (pure config; no MLflow): the regression ablation (lens parameters or CSV columns) as an evaluate grid.

Transfer runs through dlfm.evaluation (one engine for frozen heads and fine-tuning; the regression
targets, MAE and standardiser live in ``dlfm.evaluation.regression``, the random encoder and the
embedding pass in ``dlfm.evaluation.embedding``). Its own per-parameter views are in ``dlfm.stages.transfer``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from dlfm.errors import ConfigError
from dlfm.evaluation.config import EvaluateConfig, parse_seeds


@dataclass(frozen=True)
class TransferConfig:
    encoder_stage: str = "production"  # registry alias to load: models:/dlfm-encoder@<stage>
    encoder_uri: str = ""  # any models:/… URI; overrides encoder_stage when given
    dataset: str = "regression"  # preset (simulated and cached if missing), a dataset dir with lens parameters, or an imported set's numeric CSV columns
    epochs: int = 60  # finetune=true: training epochs (frozen encoders get a ridge head fitted to convergence)
    lr: float = 1e-3  # finetune=true: AdamW learning rate of encoder and head
    weight_decay: float = 1e-4  # finetune=true: AdamW weight decay
    batch_size: int = 128  # finetune=true: images per step
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
        return parse_seeds(self.seeds)

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
        return EvaluateConfig(
            encoder_stage=self.encoder_stage, encoder_uri=self.encoder_uri, tasks="regression", regression_dataset=self.dataset,
            budgets="all", arms=",".join(self.arm_names), seeds=self.seeds, epochs=self.epochs, min_steps=0,
            batch_size=self.batch_size, lr=self.lr, encoder_lr=self.lr,  # transfer fine-tunes with one learning rate
            weight_decay=self.weight_decay, device=self.device, precision=self.precision, sim_n_train=self.sim_n_train, sim_n_val=self.sim_n_val,
            sim_n_test=self.sim_n_test, sim_seed=0, experiment_name=self.experiment_name)
