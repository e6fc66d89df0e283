"""ViT building blocks shared by the ViT encoder and MAE's token decoder (timm's ``layers`` in spirit).

A leaf of dlfm.models: ``encoders`` and ``heads`` both import it, and it imports neither.
"""

from __future__ import annotations

import torch
from torch import nn

LAYER_NORM_EPS = 1e-6  # MAE's / timm's ViT LayerNorm eps


def sincos_position_embedding(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (1, rows*cols, dim), as MAE's ``get_2d_sincos_pos_embed``.

    Half the channels encode the row, half the column; computed in float64, returned as float32 on the CPU.
    Being a function of the grid, it needs no interpolation when the grid changes (a multi-instrument batch
    of another size). Models hold it through ``SinCosPositions``, which computes it once per grid.
    """
    quarter = dim // 4  # dim is a multiple of 4 (SinCosPositions checks)
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    row, col = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij")

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1) * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(col), encode(row)], dim=1).float()[None]


class SinCosPositions(nn.Module):
    """The position embedding of a ViT's token grid, kept as one non-persistent buffer per grid.

    A buffer moves with the model (``.to``) and stays out of its ``state_dict``, so checkpoints and
    registered weights are unchanged. A forward reads the buffer, and computes it only for a grid it has not
    seen. Under ``torch.compile`` that computation (float64, a new attribute) would enter the graph and
    force a recompile, so training fills every grid of its data first (``prepare_position_tables``).
    """

    def __init__(self, dim: int, patch_size: int):
        super().__init__()
        if dim % 4:
            raise ValueError(f"sine-cosine position embedding needs dim divisible by 4, got {dim}")
        self.dim, self.patch_size = dim, patch_size

    def forward(self, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        """(1, rows*cols, dim) in ``like``'s dtype, on ``like``'s device."""
        return self.table(rows, cols, like.device).to(like.dtype)

    def table(self, rows: int, cols: int, device: torch.device) -> torch.Tensor:
        """The float32 buffer of a rows × cols grid, computed on first use."""
        name = f"grid_{rows}x{cols}"
        if name not in self._buffers:
            self.register_buffer(name, sincos_position_embedding(self.dim, rows, cols).to(device), persistent=False)
        return self._buffers[name]

    def prepare(self, image_size: tuple[int, int], device: torch.device) -> None:
        """Fill the table of ``image_size`` images (their whole tokens, as the patch embedding cuts them)."""
        self.table(image_size[0] // self.patch_size, image_size[1] // self.patch_size, device)


def prepare_position_tables(model: nn.Module, image_sizes, device: torch.device) -> None:
    """Fill every ``SinCosPositions`` of ``model`` for each (H, W) of ``image_sizes``: before a compiled step."""
    for module in model.modules():
        if isinstance(module, SinCosPositions):
            for size in image_sizes:
                module.prepare(size, device)


class Attention(nn.Module):
    """Multi-head self-attention on ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is no multiple of its {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """The pre-norm ViT/MAE block (timm ``Block``): x + attn(norm(x)), then x + mlp(norm(x)); no dropout."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))



def init_vit_weights(module: nn.Module) -> None:
    """timm/MAE init (``models_mae._init_weights``): xavier-uniform linears with zero biases, LayerNorm 1 and 0."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def transformer_blocks(dim: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> nn.ModuleList:
    """``depth`` pre-norm transformer blocks (attention + GELU MLP), the ViT/MAE block, no dropout."""
    return nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
