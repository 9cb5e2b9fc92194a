"""The two feed-forward networks DINOv2 uses: GELU MLP (S/B/L) and SwiGLU (g)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """w3(silu(x1) * x2) with [x1 | x2] = w12(x); key names ``w12``/``w3`` as in DINOv2's ViT-g.

    ``hidden_dim`` is the nominal MLP width (dim * mlp_ratio). DINOv2 shrinks it to 2/3, rounded
    up to a multiple of 8, so that the parameter count matches a plain MLP of that width.
    """

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True):
        super().__init__()
        hidden = (int(hidden_dim * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)
