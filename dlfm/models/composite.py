"""The model every training objective shares: encoder + optional decoder + optional head."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from dlfm.models.encoders import Encoder, create_encoder, encoder_row
from dlfm.models.heads import ClassificationHead, Decoder, MaskedTokenDecoder, patch_statistics
from dlfm.objectives import MASKINGS, get_objective


class ModelOutput(NamedTuple):
    logits: torch.Tensor | None  # (B, num_classes), or None without a classification head
    reconstruction: torch.Tensor | None  # (B, 1, H, W), or None without a decoder
    embedding: torch.Tensor  # (B, embed_dim)
    patch_std: torch.Tensor | None = None  # MAE: each patch's pixel std (B, C, rows, cols), computed once for decoder and loss


class LensModel(nn.Module):
    """Shared encoder with a classification head and/or a decoder reading its stride-8 maps.

    With ``drop_tokens`` (a ViT under a masking objective) the decoder is MAE's instead: hidden
    tokens never reach the encoder, and a light transformer decoder fills them with mask tokens.
    """

    def __init__(self, encoder: Encoder, num_classes: int | None, reconstruct: bool, drop_tokens: bool = False,
                 decoder_dim: int = 512, decoder_depth: int = 8, mask_ratio: float = 0.75):
        super().__init__()
        self.encoder = encoder
        self.head = ClassificationHead(encoder.embed_dim, num_classes) if num_classes else None
        self.drop_tokens = drop_tokens
        self.mask_ratio = mask_ratio  # drop_tokens: the share of tokens every mask hides (PatchMasker's), a static count
        if drop_tokens:
            self.decoder = MaskedTokenDecoder(encoder.embed_dim, encoder.patch_size, width=decoder_dim, depth=decoder_depth)
        else:
            self.decoder = Decoder(encoder.levels) if reconstruct else None

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> ModelOutput:
        """``mask`` (B, 1, H, W; 1 = hidden) zeroes the hidden pixels before the encoder sees them (or drops their tokens)."""
        if self.drop_tokens:
            return self.forward_kept_tokens(images, mask)
        inputs = images if mask is None else images * (1.0 - mask)
        if self.decoder is None:
            levels = [self.encoder.forward_features(inputs)]
        else:
            levels = self.encoder.forward_levels(inputs)
        embedding = levels[-1].mean(dim=(2, 3))
        logits = self.head(embedding) if self.head is not None else None
        reconstruction = self.decoder(levels, images.shape[-2:]) if self.decoder is not None else None
        return ModelOutput(logits, reconstruction, embedding)

    def forward_kept_tokens(self, images: torch.Tensor, mask: torch.Tensor | None) -> ModelOutput:
        """MAE's forward: encode the visible tokens only, decode every token.

        The pixel mask (whole token cells, exactly ``round(n_tokens x mask_ratio)`` hidden per image:
        ``PatchMasker``, an argsort of uniform noise) becomes MAE's ``ids_keep`` / ``ids_restore``: a
        stable argsort puts each image's visible tokens first, in grid order, and its inverse unshuffles
        them. The kept count is static (from ``mask_ratio``, not read from the mask), so the step never
        waits for the device and every shape is known to a compiler.
        """
        patch = self.encoder.patch_size
        rows, cols = images.shape[-2] // patch, images.shape[-1] // patch
        n_tokens = rows * cols
        if mask is None:
            hidden = torch.zeros(images.shape[0], n_tokens, device=images.device)
            n_keep = n_tokens
        else:
            hidden = mask[:, 0, patch // 2 :: patch, patch // 2 :: patch][:, :rows, :cols].reshape(images.shape[0], -1)
            n_keep = n_tokens - round(n_tokens * self.mask_ratio)
        ids_shuffle = torch.argsort(hidden, dim=1, stable=True)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        keep = ids_shuffle[:, :n_keep]
        latent, grid = self.encoder.forward_tokens(images, keep)
        embedding = latent.mean(dim=1)
        logits = self.head(embedding) if self.head is not None else None
        mean, std = patch_statistics(images, patch)  # once per step: the decoder de-normalises with them, the loss divides by std
        return ModelOutput(logits, self.decoder(latent, ids_restore, grid, images, (mean, std)), embedding, std)


def build_model(objective: str, encoder_name: str, num_classes: int, encoder_kwargs: dict | None = None,
                decoder_dim: int = 512, decoder_depth: int = 8, mask_ratio: float = 0.75) -> LensModel:
    """Model for one objective (its parts from the objectives table); the encoder has random weights."""
    spec = get_objective(objective)
    encoder = create_encoder(encoder_name, in_chans=1, **(encoder_kwargs or {}))
    drop_tokens = spec.masks_input and MASKINGS[encoder_row(encoder_name).kind].drops_tokens
    return LensModel(encoder, num_classes if spec.classifies else None, spec.decodes, drop_tokens, decoder_dim, decoder_depth, mask_ratio)
