"""The frozen config of a training stage; logged as params and saved in every checkpoint."""

from __future__ import annotations

import contextlib
import math
from dataclasses import MISSING, asdict, dataclass, fields, replace

from dlfm.corpora import DEFAULT_MIX
from dlfm.params import param_from_string
from dlfm.errors import ConfigError
from dlfm.objectives import OBJECTIVES, get_objective
from dlfm.training.batching import AUTO, auto_batch_size
PIXEL_AUTO = AUTO  # pixel_scale=auto: the stages choose the grid from their datasets (dlfm.stages.train.resolve_pixel_scale)
LOSS_BALANCES = ("fixed", "uncertainty")
SCHEDULES = ("cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")  # resolved to fp32 | bf16 | fp16 by dlfm.training.runtime.resolve_precision
RESUME_IGNORED = ("resume",)
# Params that only some objectives take, keyed by the table property that turns them on.
WEIGHT_PARAMS = ("recon_weight", "loss_balance")
MASK_PARAMS = ("mask_ratio", "patch_size")
DECODER_PARAMS = ("decoder_dim", "decoder_depth")  # the token decoder of a masking objective (with a ViT)
PRETRAIN_PARAMS = ("pretrain_dataset", "pretrain_n_train", "pretrain_n_val", "pretrain_n_test", "pretrain_seed", "pretrain_mix")  # fields a resumed run need not share with its checkpoint


@dataclass(frozen=True)
class TrainConfig:
    objective: str  # a row of dlfm.objectives.OBJECTIVES: autoencoder | mae | supervised | multitask
    dataset: str = "model_ii"  # preset name (simulated and cached if missing), a dataset dir (yours: `dlfm dataset import`) or DeepLense folders
    # Self-supervised objectives only: train on this corpus (preset name, dataset dir, or a folder of .npy images) instead of `dataset`;
    # `dataset` then only feeds the linear probe and the reported classification metrics ("" = train on `dataset`).
    pretrain_dataset: str = ""
    encoder: str = "resnet18"  # a name from dlfm.models.list_encoders()
    stem: str = "imagenet"  # resnet18 stem: imagenet (7x7/2 + max-pool, fast) | stride2 (3x3/2, ~1.7x the step time) | small (3x3/1, ~5.5x; measured)
    epochs: int = 6  # maximum epochs; early stopping may end sooner
    # images per optimiser step; auto: 64 off CUDA, on CUDA per encoder and image size (dlfm/training/batching.py;
    # logged as batch_size_resolved)
    batch_size: int | str = "auto"
    # base AdamW lr per 256 images: the peak lr is lr x batch_size x nproc / 256 (0 = the objective's recipe, dlfm.objectives.RECIPES)
    lr: float = 0.0
    weight_decay: float = -1.0  # AdamW decoupled weight decay (-1 = the recipe's: 1e-4, ViT mae 0.05 with norms, biases and tokens exempt)
    schedule: str = "cosine"  # learning-rate schedule over all steps: cosine | onecycle
    grad_clip: float = -1.0  # max global gradient norm (0 = off; -1 = the recipe's: 1.0, ViT mae off)
    label_smoothing: float = 0.1  # cross-entropy label smoothing (same for supervised and multitask)
    recon_weight: float = 1.0  # multitask: loss = CE + recon_weight * MSE (fixed balance)
    loss_balance: str = "fixed"  # multitask: fixed | uncertainty (learned log-variance weights, Kendall et al. 2018)
    mask_ratio: float = 0.75  # mae: fraction of patches hidden from the encoder (MAE's 0.75; SparK used 0.6); vit: 0.5-0.95
    patch_size: int = 8  # mae: side of a masked patch (pixels); 8 px = the stride of the decoded latent; vit: its token size
    decoder_dim: int = 512  # ViT mae: width of MAE's transformer decoder (a multiple of 32; MAE's 512)
    decoder_depth: int = 8  # ViT mae: blocks of MAE's transformer decoder (MAE's 8)
    augment: bool = True  # random flips and rot90 (lensing images are symmetric under them)
    patience: int = 4  # early stopping: epochs without improvement of the monitored val metric (ViT mae runs every epoch, as MAE)
    seed: int = 0  # seeds torch, numpy, shuffling and augmentation
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | mps
    precision: str = "auto"  # auto (bf16 on CUDA GPUs with it and on CPUs with AMX/AVX-512 BF16, else fp32) | fp32 | bf16
    # wrap the model's training forward in torch.compile; off: ~2x per step at batch 1024 but ~36 s of compiling first,
    # unmeasured over a whole stage (benchmarks/gpu_report.sh measures it)
    compile: bool = False
    nproc: int = 1  # processes under torchrun DDP (one per GPU); the global batch is batch_size × nproc
    sim_n_train: int = 1500  # when `dataset` is a preset not cached yet: its split sizes (demo size)
    sim_n_val: int = 300
    sim_n_test: int = 300
    pretrain_n_train: int = 20000  # when `pretrain_dataset` is a preset not cached yet: its split sizes (reference size)
    pretrain_n_val: int = 1000
    pretrain_n_test: int = 1000
    # when `pretrain_dataset` is a preset not cached yet: the root seed of its simulation; apart from every
    # evaluation seed (datasets at 0, evaluate's sim_seed 1), so the corpus shares no image with them
    pretrain_seed: int = 1000
    # when `pretrain_dataset` is a multi-instrument corpus (pretrain_multi: Model I, II and III, each at its native size):
    # instrument=weight, each instrument's share of every split (normalised; equal thirds by default)
    pretrain_mix: str = DEFAULT_MIX
    # (arcsec/px) the one pixel scale the encoder reads every image at (corpus, dataset, and evaluate's), resampled from
    # each instrument's grid (Model I 0.05, II 0.101, III 0.08) and recorded in its arch config; 0 = native grids;
    # auto: the coarsest when the images come at several scales (pretrain_multi: 0.101), else native (logged as pixel_scale_resolved)
    pixel_scale: float | str = "auto"
    experiment_name: str = ""  # MLflow experiment of a run dlfm starts (empty: MLFLOW_EXPERIMENT_NAME, else deeplense-fm); not an MLproject param: `mlflow run --experiment-name` files those runs
    # seconds between checkpoints at most (0 = after every epoch); one is always written after the last epoch and on a stop
    checkpoint_every_s: float = 300.0
    resume: str = ""  # id of a KILLED/FAILED run of this stage to continue from its last checkpoint ("" = new run)

    def __post_init__(self):
        if isinstance(self.batch_size, str) and self.batch_size.strip().isdigit():  # a param arrives as a string
            object.__setattr__(self, "batch_size", int(self.batch_size))
        if isinstance(self.pixel_scale, str) and self.pixel_scale != PIXEL_AUTO:  # "0.101" from a param; else validate refuses it
            with contextlib.suppress(ValueError):
                object.__setattr__(self, "pixel_scale", float(self.pixel_scale))
        elif isinstance(self.pixel_scale, int) and not isinstance(self.pixel_scale, bool):
            object.__setattr__(self, "pixel_scale", float(self.pixel_scale))

    def with_batch_resolved(self, device_type: str, train) -> "TrainConfig":
        """This config with ``batch_size=auto`` replaced by its batch for this device and train split (else itself)."""
        if self.batch_size != AUTO:
            return self
        side = max(group.images.shape[-1] for group in train.groups)
        return replace(self, batch_size=auto_batch_size(self.encoder_kind, side, device_type, train.num_images))

    @property
    def monitor(self) -> tuple[str, str]:
        """The val metric early stopping watches and its direction (a masked objective's follows the encoder kind)."""
        return get_objective(self.objective).monitor_for(self.encoder_kind)

    @property
    def masking(self) -> dict:
        """What a masked objective hides (mask_ratio, patch_size), saved beside its decoder; empty for the others."""
        return {name: getattr(self, name) for name in MASK_PARAMS} if get_objective(self.objective).masks_input else {}

    @property
    def recipe(self):
        """The objective's optimiser recipe with this encoder (a row of dlfm.objectives.RECIPES)."""
        return get_objective(self.objective).recipe_for(self.encoder_kind)

    @property
    def lr_effective(self) -> float:
        """The peak lr: the base lr per 256 images (``lr``, else the recipe's) x the global batch / 256."""
        if self.batch_size == AUTO:
            raise ValueError("lr_effective needs the resolved batch: call with_batch_resolved first")
        return (self.lr or self.recipe.base_lr) * self.batch_size * self.nproc / 256

    @property
    def weight_decay_effective(self) -> float:
        """AdamW weight decay: ``weight_decay``, or the recipe's at -1."""
        return self.recipe.weight_decay if self.weight_decay < 0 else self.weight_decay

    @property
    def grad_clip_effective(self) -> float:
        """Max gradient norm (0 = off): ``grad_clip``, or the recipe's at -1."""
        return (self.recipe.grad_clip or 0.0) if self.grad_clip < 0 else self.grad_clip

    @property
    def encoder_kind(self) -> str:
        """cnn | vit: the encoder's registry row, which picks the way a masked objective hides input."""
        from dlfm.models.encoders import encoder_row

        return encoder_row(self.encoder).kind

    def validate(self) -> None:
        """Raise ConfigError for any out-of-range or unknown value, before any work starts."""
        from dlfm.models import list_encoders
        from dlfm.models.encoders import RESNET_STEMS

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        spec = get_objective(self.objective)
        need(self.encoder in list_encoders(), f"unknown encoder {self.encoder!r}; choose one of {', '.join(list_encoders())}")
        need(self.stem in RESNET_STEMS, f"unknown stem {self.stem!r}; choose one of {', '.join(RESNET_STEMS)}")
        need(self.batch_size == AUTO or (isinstance(self.batch_size, int) and self.batch_size > 0),
             f"batch_size must be a positive integer or {AUTO}, got {self.batch_size!r}")
        for name in ("epochs", "nproc", "sim_n_train", "sim_n_val", "sim_n_test",
                     "pretrain_n_train", "pretrain_n_val", "pretrain_n_test", "patch_size"):
            value = getattr(self, name)
            need(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        need(self.pretrain_seed >= 0, f"pretrain_seed must be a non-negative integer, got {self.pretrain_seed!r}")
        from dlfm.corpora import MULTI_CORPORA, parse_mix

        if self.pretrain_dataset in MULTI_CORPORA:
            parse_mix(self.pretrain_mix, self.pretrain_dataset)  # a bad mix is one line before any work
        need(math.isfinite(self.checkpoint_every_s) and self.checkpoint_every_s >= 0,
             f"checkpoint_every_s must be >= 0 (0 = every epoch), got {self.checkpoint_every_s!r}")
        need(self.pixel_scale == PIXEL_AUTO or (isinstance(self.pixel_scale, float) and math.isfinite(self.pixel_scale)
                                                and self.pixel_scale >= 0),
             f"pixel_scale must be {PIXEL_AUTO} or >= 0 arcsec/px (0 = each instrument at its own grid; e.g. 0.101, Euclid's), "
             f"got {self.pixel_scale!r}")
        need(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        need(math.isfinite(self.lr) and self.lr >= 0, f"lr must be a positive number (or 0: the recipe's), got {self.lr!r}")
        need(math.isfinite(self.weight_decay) and (self.weight_decay >= 0 or self.weight_decay == -1),
             f"weight_decay must be >= 0 (or -1: the recipe's), got {self.weight_decay!r}")
        need(isinstance(self.decoder_dim, int) and self.decoder_dim > 0 and self.decoder_dim % 32 == 0,
             f"decoder_dim must be a positive multiple of 32 (32 channels per attention head), got {self.decoder_dim!r}")
        need(isinstance(self.decoder_depth, int) and self.decoder_depth > 0, f"decoder_depth must be a positive integer, got {self.decoder_depth!r}")
        need(math.isfinite(self.recon_weight) and self.recon_weight >= 0, f"recon_weight must be >= 0, got {self.recon_weight!r}")
        need(self.grad_clip >= 0 or self.grad_clip == -1, f"grad_clip must be >= 0 (0 turns clipping off; -1: the recipe's), got {self.grad_clip!r}")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        need(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        need(self.loss_balance in LOSS_BALANCES, f"unknown loss_balance {self.loss_balance!r}; choose one of {', '.join(LOSS_BALANCES)}")
        if spec.masks_input:
            from dlfm.models.encoders import encoder_row
            from dlfm.objectives import MASKINGS

            row = encoder_row(self.encoder)
            low, high = MASKINGS[row.kind].mask_ratio
            need(0 < self.mask_ratio < 1 and low <= self.mask_ratio <= high,
                 f"mask_ratio must be in {'(0, 1)' if (low, high) == (0.0, 1.0) else f'[{low}, {high}]'} with a {row.kind} "
                 f"encoder, got {self.mask_ratio!r}; SparK uses 0.6, MAE 0.75")
            need(row.token_size is None or self.patch_size == row.token_size,
                 f"with {self.encoder} mae masks whole tokens: patch_size must be its token size {row.token_size}, "
                 f"got {self.patch_size}")
        need(not self.pretrain_dataset or spec.probed,
             f"pretrain_dataset applies to the self-supervised objectives ({', '.join(n for n, o in OBJECTIVES.items() if o.probed)}); "
             f"{self.objective} reads labels, so train it on `dataset` and drop pretrain_dataset")
        need(self.device in DEVICES, f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        need(self.precision in PRECISIONS, f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")

    @property
    def encoder_kwargs(self) -> dict:
        """Keyword arguments for create_encoder beyond the name.

        ``pixel_scale=auto`` still unresolved counts as native grids: the stages resolve it when they read their
        datasets (``dlfm.stages.train.resolve_pixel_scale``), so a caller of ``fit`` that did not has handed it native images.
        """
        return self.encoder_kwargs_at(0.0 if self.pixel_scale == PIXEL_AUTO else self.pixel_scale)

    def encoder_kwargs_at(self, pixel_scale: float) -> dict:
        """create_encoder's keyword arguments beyond the name, at ``pixel_scale`` (0: native grids, no key)."""
        return {**({"stem": self.stem} if self.encoder == "resnet18" else {}),
                **({"pixel_scale": pixel_scale} if pixel_scale else {})}

    def to_dict(self) -> dict:
        """Plain dict of every field (logged as params, stored in checkpoints)."""
        return asdict(self)

    def resumed_from(self, saved: dict) -> "TrainConfig":
        """This config continuing a checkpoint's ``saved`` config; ConfigError if they differ.

        ``mlflow run -P resume=<id>`` passes every other param at its default, so a field left at
        its default takes the checkpoint's value. Any other difference is refused, except that
        ``epochs`` may grow.
        """
        merged, differing = {}, []
        for spec in fields(self):
            if spec.name in RESUME_IGNORED or spec.name not in saved:
                continue
            mine, theirs = getattr(self, spec.name), saved[spec.name]
            if mine == theirs or (spec.default is not MISSING and mine == spec.default):
                merged[spec.name] = theirs
            elif spec.name == "epochs" and isinstance(mine, int) and mine > theirs:
                merged[spec.name] = mine
            else:
                differing.append(f"{spec.name}={mine!r} (checkpoint: {theirs!r})")
        if differing:
            raise ConfigError(
                f"run {self.resume} was trained with another config: {', '.join(differing)}; resume with the "
                "same params (only epochs may grow) or start a new run without resume"
            )
        return replace(self, **merged)

    def saved_from_params(self, params: dict[str, str], declared: set[str]) -> dict:
        """The resumed run's own config, typed back from its MLflow params (a run with no checkpoint).

        A resume never fills a field from the defaults: a field the run did not record is refused,
        naming a fresh command, so the old run never trains a config it was not started with.
        """
        skipped = set(RESUME_IGNORED) | set(objective_excluded_params(self.objective)) | {"experiment_name"}
        saved, missing = {}, []
        for spec in fields(self):
            if spec.name in skipped or spec.default is MISSING:  # objective: the run's stage tag, checked already
                continue
            if spec.name not in params:
                if spec.name in declared:  # `mlflow run` logs every declared param; the rest only when given
                    missing.append(spec.name)
                continue
            try:
                saved[spec.name] = param_from_string(spec.default, params[spec.name])
            except ValueError:
                raise ConfigError(f"resume={self.resume}: the run's param {spec.name}={params[spec.name]!r} is not "
                                  f"{type(spec.default).__name__}; start a fresh run: {fresh_command(self.objective)}") from None
        if missing:
            raise ConfigError(f"resume={self.resume}: the run has no checkpoint and did not record "
                              f"{'any params' if not saved else 'the params ' + ', '.join(missing)}, "
                              f"so there is nothing to continue; start a fresh run: {fresh_command(self.objective)}")
        return saved

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all fields, in declaration order."""
        return [f.name for f in fields(cls)]


def fresh_command(entry: str) -> str:
    """The command that starts a new run of ``entry`` (named when a resume is refused)."""
    return f"mlflow run . -e {entry} --env-manager local -P dataset=... (your params, without resume)"




def objective_excluded_params(objective: str) -> tuple[str, ...]:
    """TrainConfig fields an objective's entry point does not take (read from the objectives table)."""
    spec = get_objective(objective)
    return ((() if spec.weighted else WEIGHT_PARAMS) + (() if spec.masks_input else MASK_PARAMS + DECODER_PARAMS)
            + (() if spec.probed else PRETRAIN_PARAMS))
