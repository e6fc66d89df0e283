"""Losses of the objectives in ``dlfm.objectives.OBJECTIVES``; each part is kept apart for logging."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dlfm.models.composite import ModelOutput
from dlfm.models.heads import PatchMasker
from dlfm.objectives import PARTS, get_objective


def masked_mse(reconstruction: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over hidden pixels only (SparK: loss on the non-active patches)."""
    squared = (reconstruction.float() - images.float()) ** 2 * mask
    return squared.sum() / (mask.sum() * images.shape[1]).clamp_min(1.0)


class Objective(nn.Module):
    """The loss of one objective: the sum of its table parts.

    With both a classification and a reconstruction part, loss = CE + recon_weight × MSE
    (fixed), or learned uncertainty weighting: following Kendall, Gal & Cipolla (2018) each term
    i is scaled by exp(-s_i) and s_i is added, with s_i = log σ_i² learned with the model.
    """

    def __init__(self, objective: str, recon_weight: float = 1.0, loss_balance: str = "fixed", label_smoothing: float = 0.0,
                 patch_size: int = 8, mask_ratio: float = 0.6):
        super().__init__()
        self.spec = get_objective(objective)
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
            if self.masker is not None:
                loss_recon = masked_mse(output.reconstruction, images, mask)
                parts[PARTS["masked"]] = loss_recon.detach()
            else:
                loss_recon = F.mse_loss(output.reconstruction.float(), images.float())
                parts[PARTS["recon"]] = loss_recon.detach()
            terms.append(loss_recon)
        if self.uncertainty:
            total = sum(torch.exp(-s) * term + s for s, term in zip(self.log_vars, terms))
        elif self.use_cls and self.use_recon:
            total = terms[0] + self.recon_weight * terms[1]
        else:
            total = terms[0]
        return total, parts
