"""Losses for the three objectives; the reconstruction and classification terms are kept apart."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dlfm.models.composite import ModelOutput


class Objective(nn.Module):
    """loss = CE + recon_weight × MSE (fixed), or learned uncertainty weighting.

    ``uncertainty`` follows Kendall, Gal & Cipolla (2018): each term i is scaled by
    exp(-s_i) and s_i is added, with s_i = log σ_i² learned with the model.
    """

    def __init__(self, objective: str, recon_weight: float = 1.0, loss_balance: str = "fixed", label_smoothing: float = 0.0):
        super().__init__()
        self.use_cls = objective in ("supervised", "multitask")
        self.use_recon = objective in ("autoencoder", "multitask")
        self.recon_weight = recon_weight if objective == "multitask" else 1.0
        self.label_smoothing = label_smoothing
        self.uncertainty = objective == "multitask" and loss_balance == "uncertainty"
        self.log_vars = nn.Parameter(torch.zeros(2)) if self.uncertainty else None

    def forward(self, output: ModelOutput, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its detached parts (loss_cls, loss_recon)."""
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=images.device)
        if self.use_cls:
            loss_cls = F.cross_entropy(output.logits.float(), labels, label_smoothing=self.label_smoothing)
            parts["loss_cls"] = loss_cls.detach()
        if self.use_recon:
            loss_recon = F.mse_loss(output.reconstruction.float(), images.float())
            parts["loss_recon"] = loss_recon.detach()
        if self.uncertainty:
            total = torch.exp(-self.log_vars[0]) * loss_cls + self.log_vars[0]
            total = total + torch.exp(-self.log_vars[1]) * loss_recon + self.log_vars[1]
        else:
            if self.use_cls:
                total = total + loss_cls
            if self.use_recon:
                total = total + self.recon_weight * loss_recon
        return total, parts
