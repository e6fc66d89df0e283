"""The one table of training objectives: adding an objective is adding a row here.

Every other module reads this table (config validation, the model's parts, the loss, the loop's
monitor and probe, the entry points' params, the main pipeline) instead of testing names.
It imports nothing heavy, so a bad param is refused before torch loads.
"""

from __future__ import annotations

from dataclasses import dataclass

# Loss parts an objective can combine; each one names the metric it logs. = {
# Every split (train/val/test) logs a part under the same name, so one name is one quantity everywhere.
PARTS = {
    "cls": "loss_cls",  # classification head, cross-entropy on the class labels (train: with label smoothing)
    "recon": "recon_mse",  # decoder, MSE over the whole normalised image
    "masked": "masked_mse",  # random patches of the input hidden; decoder MSE on the hidden patches only
    # ViT MAE: MSE on the hidden patches only, each target patch normalised by its own pixel mean and
    # std (MAE's norm_pix_loss), so it is in units of each patch's variance: another quantity, another name
    "masked_norm": "masked_norm_mse",
}


@dataclass(frozen=True)
class Recipe:
    """How an objective is optimised (AdamW): one row, which the loop reads without testing names.

    The peak lr is ``base_lr x global batch / 256`` (the global batch is batch_size x nproc: the linear
    scaling rule of Goyal et al. 2017, as MAE's ``main_pretrain.py``); per step, a linear warmup from 0
    over ``warmup_share`` of all steps, then a half-cycle cosine to 0 (MAE's ``util/lr_sched.py``).
    """

    base_lr: float  # peak AdamW lr per 256 images of global batch (the `lr` param overrides it)
    warmup_share: float  # share of all optimiser steps spent in the linear warmup from lr 0 (0 = start at the peak)
    betas: tuple[float, float]  # AdamW (beta1, beta2)
    weight_decay: float  # AdamW decoupled weight decay (the `weight_decay` param overrides it)
    decay_exempt: bool  # True: no decay on params with ndim <= 1 (norms, biases) nor on position embeddings and tokens
    grad_clip: float | None  # max global gradient norm; None = no clipping (the `grad_clip` param overrides it)
    early_stopping: bool  # True: stop after `patience` epochs without improving the monitor; False: run every epoch


RECIPES: dict[str, Recipe] = {
    # Today's measured behaviour: peak 1e-3 at the default batch 64 (4e-3 x 64 / 256), no warmup, cosine to 0,
    # AdamW's default betas, 1e-4 decay on every param, clipping at norm 1, patience-based early stopping.
    "adamw": Recipe(base_lr=4e-3, warmup_share=0.0, betas=(0.9, 0.999), weight_decay=1e-4, decay_exempt=False,
                    grad_clip=1.0, early_stopping=True),
    # MAE (He et al. 2022, facebookresearch/mae main_pretrain.py): blr 1.5e-4, betas (0.9, 0.95), wd 0.05 with
    # norms/biases/pos_embed/tokens exempt, no clipping, a fixed number of epochs. The paper warms up 40 of its
    # 400 epochs (0.1; 0.025 of 1600): we keep the share 0.1, which at our 30-epoch runs is 3 epochs, long enough
    # for Adam's second moments to settle before the peak (a shorter absolute warmup would cut that short).
    "mae": Recipe(base_lr=1.5e-4, warmup_share=0.1, betas=(0.9, 0.95), weight_decay=0.05, decay_exempt=True,
                  grad_clip=None, early_stopping=False),
}


@dataclass(frozen=True)
class MaskingSpec:
    """One way for a masking objective to hide input, chosen by the encoder's kind (its registry row)."""

    part: str  # the PARTS key of its reconstruction loss
    mask_ratio: tuple[float, float]  # allowed mask_ratio range, ends included (and always strictly inside (0, 1))
    drops_tokens: bool  # True: hidden tokens never enter the encoder (MAE); False: hidden pixels are zeroed (SparK)
    description: str
    recipe: str | None = None  # a RECIPES key that replaces the objective's own with this way to mask (None: keep it)


MASKINGS: dict[str, MaskingSpec] = {
    # encoder kind (dlfm.models.encoders.ENCODER_KINDS) -> its way to mask
    "cnn": MaskingSpec("masked", (0.0, 1.0), drops_tokens=False,
                       description="SparK: hidden pixels zeroed, a dense CNN and the stride-8 decoder, MSE on hidden pixels"),
    "vit": MaskingSpec("masked_norm", (0.5, 0.95), drops_tokens=True,
                       description="MAE: hidden tokens dropped before the encoder, a light transformer decoder with mask "
                                   "tokens, MSE on the normalised pixels of hidden patches", recipe="mae"),
}


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    parts: tuple[str, ...]  # loss parts from PARTS, summed (weighted by recon_weight when both cls and recon)
    monitor: tuple[str, str]  # val metric that early stopping watches, and its direction (min | max)
    probed: bool  # no label is read in training: classification metrics come from a linear probe on frozen embeddings
    description: str  # one line, for --help and run descriptions
    recipe: str = "adamw"  # its optimiser recipe, a RECIPES key (a masking objective's MASKINGS row may replace it)

    def recipe_for(self, kind: str) -> Recipe:
        """The optimiser recipe with an encoder of ``kind`` (cnn | vit): a masking row's own recipe wins."""
        if self.masks_input and MASKINGS[kind].recipe is not None:
            return RECIPES[MASKINGS[kind].recipe]
        return RECIPES[self.recipe]

    @property
    def classifies(self) -> bool:
        """Trains a classification head on the labels."""
        return "cls" in self.parts

    @property
    def selects_on_labels(self) -> bool:
        """Its monitor (which epoch is kept) reads val labels: a classification metric, not a reconstruction loss."""
        return any(word in self.monitor[0] for word in ("auc", "accuracy", "loss_cls"))

    @property
    def decodes(self) -> bool:
        """Has a decoder that reconstructs pixels."""
        return "recon" in self.parts or "masked" in self.parts

    @property
    def masks_input(self) -> bool:
        """Hides random input patches (masked-image modelling)."""
        return "masked" in self.parts

    @property
    def weighted(self) -> bool:
        """recon_weight and loss_balance apply: a classification term and a reconstruction term are summed."""
        return self.classifies and self.decodes

    @property
    def total_metric(self) -> str:
        """Name (without split prefix) of the objective's own total loss: ``loss_<objective>``.

        The total means something else in every objective (MSE, CE, CE + w x MSE), so it never
        shares a name with another stage's total; for a one-part objective it equals that part.
        """
        return f"loss_{self.name}"

    @property
    def recon_metric(self) -> str | None:
        """Name (without split prefix) of the reconstruction metric with a CNN, or None without a decoder."""
        return self.recon_metric_for("cnn")

    def recon_metric_for(self, kind: str) -> str | None:
        """Name (without split prefix) of the reconstruction metric with an encoder of ``kind``."""
        if self.masks_input:
            return PARTS[MASKINGS[kind].part]
        return "recon_mse" if self.decodes else None

    def monitor_for(self, kind: str) -> tuple[str, str]:
        """``monitor`` with an encoder of ``kind``: a monitored reconstruction metric follows the way to mask."""
        name, mode = self.monitor
        if name == f"val/{self.recon_metric}":
            return f"val/{self.recon_metric_for(kind)}", mode
        return name, mode


OBJECTIVES: dict[str, ObjectiveSpec] = {
    spec.name: spec
    for spec in (
        ObjectiveSpec("autoencoder", ("recon",), ("val/recon_mse", "min"), probed=True,
                      description="reconstruct the whole image through the encoder's stride-8 latent (no labels)"),
        ObjectiveSpec("mae", ("masked",), ("val/masked_mse", "min"), probed=True,
                      description="masked-image modelling: reconstruct hidden patches from the visible ones (no labels); "
                                  "SparK-style with a CNN, MAE-style with a ViT (MASKINGS)"),
        ObjectiveSpec("supervised", ("cls",), ("val/macro_auc", "max"), probed=False,
                      description="cross-entropy on the substructure class"),
        ObjectiveSpec("multitask", ("cls", "recon"), ("val/macro_auc", "max"), probed=False,
                      description="cross-entropy + recon_weight x reconstruction MSE"),
    )
}


def get_objective(name: str) -> ObjectiveSpec:
    """The table row for ``name``; ConfigError naming the choices when unknown."""
    from dlfm.errors import ConfigError

    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def self_supervised_objectives() -> tuple[str, ...]:
    """Objectives that never read labels (main pretrains them on the pretraining corpus)."""
    return tuple(name for name, spec in OBJECTIVES.items() if spec.probed)
