"""Losses of the objectives in ``dlfm.objectives.OBJECTIVES``; each part is kept apart for logging."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dlfm.models.composite import ModelOutput
from dlfm.models.heads import PatchMasker, expand_cells, patch_statistics
from dlfm.objectives import MASKINGS, PARTS, get_objective


def masked_mse(reconstruction: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over hidden pixels only (SparK: loss on the non-active patches)."""
    squared = (reconstruction.float() - images.float()) ** 2 * mask
    return squared.sum() / (mask.sum() * images.shape[1]).clamp_min(1.0)


def masked_norm_mse(reconstruction: torch.Tensor, images: torch.Tensor, mask: torch.Tensor, patch_size: int,
                    std: torch.Tensor | None = None) -> torch.Tensor:
    """MSE over hidden pixels in units of each target patch's std (MAE's norm_pix_loss on the hidden patches).

    Equal to MAE's loss on normalised pixels, ((prediction - (x - mean) / std)², for a reconstruction
    de-normalised with the target patch's mean and std, as ``MaskedTokenDecoder`` returns it.
    """
    if std is None:  # the model's forward usually has it already (ModelOutput.patch_std)
        _, std = patch_statistics(images, patch_size)
    scale = expand_cells(std, patch_size, images.shape[-2:])
    squared = ((reconstruction.float() - images.float()) / scale) ** 2 * mask
    return squared.sum() / (mask.sum() * images.shape[1]).clamp_min(1.0)


class Objective(nn.Module):
    """The loss of one objective: the sum of its table parts.

    With both a classification and a reconstruction part, loss = CE + recon_weight × MSE
    (fixed), or learned uncertainty weighting: following Kendall, Gal & Cipolla (2018) each term
    i is scaled by exp(-s_i) and s_i is added, with s_i = log σ_i² learned with the model.
    A masking objective's reconstruction part follows the encoder's ``kind`` (``MASKINGS``): MSE on
    hidden pixels (cnn, SparK) or on the normalised pixels of hidden patches (vit, MAE).
    """

    def __init__(self, objective: str, recon_weight: float = 1.0, loss_balance: str = "fixed", label_smoothing: float = 0.0,
                 patch_size: int = 8, mask_ratio: float = 0.75, kind: str = "cnn"):
        super().__init__()
        self.spec = get_objective(objective)
        self.patch_size = patch_size
        self.recon_metric = self.spec.recon_metric_for(kind)  # the metric name of the reconstruction part, or None
        self.normalised = self.spec.masks_input and MASKINGS[kind].part == "masked_norm"
        self.use_cls = self.spec.classifies
        self.use_recon = self.spec.decodes
        self.recon_weight = recon_weight if self.spec.weighted else 1.0
        self.label_smoothing = label_smoothing
        self.uncertainty = self.spec.weighted and loss_balance == "uncertainty"
        self.log_vars = nn.Parameter(torch.zeros(2)) if self.uncertainty else None
        self.masker = PatchMasker(patch_size, mask_ratio) if self.spec.masks_input else None

    def make_mask(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
        """A fresh random patch mask for masked objectives, None for the others."""
        return self.masker(images, generator) if self.masker is not None else None

    def reconstruction_error(self, reconstruction: torch.Tensor, images: torch.Tensor, mask: torch.Tensor | None,
                             patch_std: torch.Tensor | None = None) -> torch.Tensor:
        """The reconstruction part's quantity (``recon_metric``) for any prediction, e.g. the mean-image baseline."""
        if mask is None:
            return F.mse_loss(reconstruction.float(), images.float())
        if self.normalised:
            return masked_norm_mse(reconstruction, images, mask, self.patch_size, patch_std)
        return masked_mse(reconstruction, images, mask)

    def per_image_error(self, reconstruction: torch.Tensor, images: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``reconstruction_error`` of each image (B,): the same quantity, averaged per image instead of over the batch."""
        squared = (reconstruction.float() - images.float()) ** 2
        if mask is None:
            return squared.mean(dim=(1, 2, 3))
        if self.normalised:
            _, std = patch_statistics(images, self.patch_size)
            squared = squared / expand_cells(std, self.patch_size, images.shape[-2:]) ** 2
        return (squared * mask).sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) * images.shape[1]).clamp_min(1.0)

    def forward(self, output: ModelOutput, images: torch.Tensor, labels: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its detached parts, keyed by their ``PARTS`` metric names (loss_cls, recon_mse, masked_mse)."""
        parts: dict[str, torch.Tensor] = {}
        terms: list[torch.Tensor] = []
        if self.use_cls:
            loss_cls = F.cross_entropy(output.logits.float(), labels, label_smoothing=self.label_smoothing)
            parts[PARTS["cls"]] = loss_cls.detach()
            terms.append(loss_cls)
        if self.use_recon:
            loss_recon = self.reconstruction_error(output.reconstruction, images, mask, output.patch_std)
            parts[self.recon_metric] = loss_recon.detach()
            terms.append(loss_recon)
        if self.uncertainty:
            total = sum(torch.exp(-s) * term + s for s, term in zip(self.log_vars, terms))
        elif self.use_cls and self.use_recon:
            total = terms[0] + self.recon_weight * terms[1]
        else:
            total = terms[0]
        return total, parts
