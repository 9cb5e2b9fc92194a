"""TransVPR (Wang et al., CVPR 2022): CNN stem, multi-level tokens, CCT-style transformer, attention pooling.

Module names follow the official ``Extractor_base`` with the ``POOL`` head added as ``pool`` so
that ``TransVPR_MSLS.pth`` loads strictly (docs/models.md §5.2, §5.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import VPRModel

EMBED_DIM = 256
NUM_LAYERS = 6
NUM_HEADS = 4
MLP_RATIO = 2
PATCH_SIZE = 16  # four stride-2 max-pools
POOL_LEVELS = (1, 3, 5)  # layers 2, 4 and 6 feed the global descriptor
LOCAL_LAYER = 3  # test_msls.py --layer: the 4th layer's patch tokens are the key-patch descriptors


def conv_stage(in_ch: int, out_ch: int) -> nn.Sequential:
    """Conv3x3 -> BN -> ReLU -> MaxPool(3, 2, 1); halves the resolution. Indices 0/1 carry the keys."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )


class Tokenizer(nn.Module):
    """Non-overlapping conv that brings one stem level to the common 1/16 grid, flattened row-major."""

    def __init__(self, in_ch: int, stride: int, out_ch: int = EMBED_DIM // 4):
        super().__init__()
        self.conv_layer = nn.Conv2d(in_ch, out_ch, kernel_size=stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_layer(x).flatten(2).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention; the official qkv projection has no bias."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class EncoderLayer(nn.Module):
    """CCT layer: pre-norm attention residual, a post-norm, then an MLP residual with no norm before it."""

    def __init__(self, dim: int, num_heads: int, hidden: int):
        super().__init__()
        self.pre_norm = nn.LayerNorm(dim)
        self.self_attn = SelfAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, hidden)
        self.norm1 = nn.LayerNorm(dim)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(self.pre_norm(x)))
        return x + self.linear2(F.gelu(self.linear1(x)))


class Transformer(nn.Module):
    """Class token (no positional embedding) + layers; returns every layer through the shared final LN."""

    def __init__(self, dim: int = EMBED_DIM, depth: int = NUM_LAYERS, num_heads: int = NUM_HEADS):
        super().__init__()
        self.class_emb = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(EncoderLayer(dim, num_heads, dim * MLP_RATIO) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.class_emb.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        layers = []
        for block in self.blocks:
            x = block(x)
            layers.append(self.norm(x))  # the un-normed x feeds the next layer
        return torch.stack(layers, dim=1)  # [B, depth, 1+N, dim]


class L2Norm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2, dim=-1)


class AttentionPool(nn.Module):
    """Official ``POOL``: one softmax-over-patches map per level, each predicted from all three levels."""

    def __init__(self, dim: int = EMBED_DIM, levels: tuple[int, ...] = POOL_LEVELS):
        super().__init__()
        self.levels = list(levels)
        self.fc = nn.Sequential(L2Norm(), nn.Linear(dim * len(levels), dim), L2Norm())
        self.attention_pool = nn.Linear(dim * len(levels), len(levels))

    def forward(self, layers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = layers[:, self.levels, 1:, :]  # [B, L, N, C]
        concat = patches.permute(0, 2, 1, 3).flatten(2)  # [B, N, L*C], level-major per token
        attn = self.attention_pool(concat).softmax(dim=1).transpose(1, 2)  # [B, L, N]
        pooled = (attn.unsqueeze(-2) @ patches).squeeze(-2)  # level j weighted by its own map: [B, L, C]
        return self.fc(pooled.flatten(1)), attn


def fuse_attention(attn_pool: torch.Tensor) -> torch.Tensor:
    """Key-patch saliency [B, N] in [0, 1]: min-max each map over patches, sum, min-max again."""
    return _min_max(_min_max(attn_pool).sum(dim=1))


def _min_max(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=-1, keepdim=True)
    hi = x.amax(dim=-1, keepdim=True)
    # The floor only matters for a perfectly flat map (official code would give NaN there).
    return (x - lo) / (hi - lo).clamp_min(1e-12)


class TransVPR(VPRModel):
    def __init__(self):
        super().__init__()
        self.conv1 = conv_stage(3, 64)
        self.conv2 = conv_stage(64, 128)
        self.conv3 = conv_stage(128, 256)
        self.conv4 = conv_stage(256, 512)
        # Kernel = stride brings the 1/2 .. 1/16 maps to the same 1/16 grid.
        self.tokenizer1 = Tokenizer(64, 8)
        self.tokenizer2 = Tokenizer(128, 4)
        self.tokenizer3 = Tokenizer(256, 2)
        self.tokenizer4 = Tokenizer(512, 1)
        self.transformer = Transformer()
        self.pool = AttentionPool()

    def layers(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """All normed layer outputs [B, 6, 1+N, 256] and the (rows, cols) patch grid."""
        maps = []
        x = images
        for stage in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = stage(x)
            maps.append(x)
        tokenizers = (self.tokenizer1, self.tokenizer2, self.tokenizer3, self.tokenizer4)
        tokens = torch.cat([tok(m) for tok, m in zip(tokenizers, maps, strict=True)], dim=-1)
        return self.transformer(tokens), (x.shape[-2], x.shape[-1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(images)[0])[0]

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Global descriptor plus the key-patch inputs of the official re-ranker.

        ``patch_tokens`` [B, N, 256] are not normalised (matching uses raw dot products);
        ``attention`` is the fused saliency [B, N]; ``grid`` holds the (rows, cols) of the N patches.
        """
        layers, grid = self.layers(images)
        global_desc, attn_pool = self.pool(layers)
        return {
            "global": global_desc,
            "patch_tokens": layers[:, LOCAL_LAYER, 1:, :],
            "attention": fuse_attention(attn_pool),
            "attn_pool": attn_pool,
            "grid": torch.tensor(grid, dtype=torch.int64),
        }


def build_transvpr() -> TransVPR:
    """Randomly initialised TransVPR with the official module tree (load weights afterwards)."""
    return TransVPR()
