"""Pair-VPR (Hausler et al., RA-L 2025): DINOv2-reg4 global descriptor + a cross-attention pair classifier.

Module names follow the official ``PairVPRNet`` so that ``pairvpr-vit{B,L,G}.pth`` load strictly,
including the pre-training leftovers (``mask_token``, ``prediction_head``) and the persistent
decoder position buffers (docs/models.md §4.3, §4.4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import VPRModel
from .layers import Attention, Mlp
from .vit import DinoVisionTransformer, dinov2_hub

IMG_RES = 322
PATCH_SIZE = 14
GRID = IMG_RES // PATCH_SIZE  # the decoder position grid is built for 23x23 and never resized
DEC_DIM = 768
DEC_DEPTH = 12
DEC_HEADS = 12
GLOBAL_DIM = 512
EPS = 1e-6


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """MAE 2-D sin-cos table [grid*grid, dim], tokens row-major.

    The first half of the channels encodes the column, the second half the row (the official
    code names them the other way round but feeds the x grid first). Each half is
    [sin(p * w_k), cos(p * w_k)] with w_k = 10000 ** (-k / (dim / 4)). Computed in float64 like
    the official numpy code, then rounded once.
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1).double() * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def rebuild_dec_pos_embed_cls(state_dict: dict) -> dict:
    """What eval.py does at load time: ``dec_pos_embed_cls`` := [zero row ; ``dec_pos_embed``].

    The file's own ``dec_pos_embed_cls`` is discarded. A file without ``dec_pos_embed`` gets the
    sin-cos table the official model builds (eval.py loads with strict=False, so it keeps it).
    """
    out = dict(state_dict)
    pos = out.get("dec_pos_embed")
    if pos is None:
        dim = out["decoder_embed.weight"].shape[0]
        pos = out["dec_pos_embed"] = sincos_pos_embed_2d(dim, GRID)
    out["dec_pos_embed_cls"] = torch.cat([pos.new_zeros(1, pos.shape[1]), pos], dim=0)
    return out


class CrossAttention(nn.Module):
    """Multi-head attention of x (queries) over a memory sequence, separate q/k/v projections.

    A memory of batch 1 is projected once and shared by every query in the batch, so one query
    image can be scored against many candidates without copying it.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q = self._heads(self.projq(x))
        k = self._heads(self.projk(memory)).expand(b, -1, -1, -1)
        v = self._heads(self.projv(memory)).expand(b, -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v)  # scale head_dim ** -0.5, as the official code
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention to the (normalised) other image, MLP; all pre-norm residuals.

    The memory itself is not updated: every block attends to the same embedded features of the
    second image, each through its own ``norm_y``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        # Registration order reproduces the official state_dict() order.
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = Attention(dim, num_heads)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.norm3 = nn.LayerNorm(dim, eps=EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=EPS)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.cross_attn(self.norm2(x), self.norm_y(memory))
        return x + self.mlp(self.norm3(x))


class Encoder(nn.Module):
    """Holds the DINOv2 backbone under ``model`` (the official wrapper has no parameters of its own)."""

    def __init__(self, model: DinoVisionTransformer):
        super().__init__()
        self.model = model


class PairVPR(VPRModel):
    def __init__(self, backbone: DinoVisionTransformer, dec_dim: int = DEC_DIM, dec_depth: int = DEC_DEPTH):
        super().__init__()
        enc_dim = backbone.embed_dim
        # Parameters and buffers first, then children: the official state_dict() order.
        self.decoder_clstoken = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))  # MIM pre-training only
        pos = sincos_pos_embed_2d(dec_dim, GRID)
        self.register_buffer("dec_pos_embed_cls", torch.cat([pos.new_zeros(1, dec_dim), pos]))
        self.register_buffer("dec_pos_embed", pos)
        self.encoder = Encoder(backbone)
        self.decoder_embed = nn.Linear(enc_dim, dec_dim)
        self.dec_blocks = nn.ModuleList(DecoderBlock(dec_dim, DEC_HEADS) for _ in range(dec_depth))
        self.dec_norm = nn.LayerNorm(dec_dim, eps=EPS)
        self.prediction_head = nn.Linear(dec_dim, PATCH_SIZE * PATCH_SIZE * 3)  # MIM pre-training only
        self.classvprmodule = nn.Sequential(nn.Linear(dec_dim, 512), nn.ReLU(), nn.Linear(512, 1))
        self.globalizer = nn.Sequential(nn.Linear(enc_dim, GLOBAL_DIM))

    def _encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.encoder.model.forward_features(images)
        return {"global": F.normalize(self.globalizer(feats["cls"]), p=2, dim=-1), "dense": feats["patch"]}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._encode(images)["global"]

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """512-D global descriptor and the dense patch features [B, 529, C] the pair classifier reads."""
        return self._encode(images)

    def _decode_embedded(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        batch = max(x.shape[0], memory.shape[0])
        cls = self.decoder_clstoken.expand(batch, -1, -1)
        x = torch.cat([cls, x.expand(batch, -1, -1)], dim=1) + self.dec_pos_embed_cls
        memory = memory + self.dec_pos_embed
        for block in self.dec_blocks:
            x = block(x, memory)
        return self.dec_norm(x)

    def decode(self, dense_x: torch.Tensor, dense_y: torch.Tensor) -> torch.Tensor:
        """Decoder output [B, 1+N, 768] for image x (holds the class token) attending to image y.

        Either input may have batch 1 and is then shared across the other's batch.
        """
        return self._decode_embedded(self.decoder_embed(dense_x), self.decoder_embed(dense_y))

    def pair_logits(self, dense_q: torch.Tensor, dense_db: torch.Tensor) -> torch.Tensor:
        """Raw logit s(q, db) per pair [B]; higher means more likely the same place."""
        return self._logit(self.decode(dense_q, dense_db))

    def pair_score(self, dense_q: torch.Tensor, dense_db: torch.Tensor) -> torch.Tensor:
        """Official re-rank score s(q, db) + s(db, q) per pair [B]; each image is embedded once."""
        q, db = self.decoder_embed(dense_q), self.decoder_embed(dense_db)
        return self._logit(self._decode_embedded(q, db)) + self._logit(self._decode_embedded(db, q))

    def _logit(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.classvprmodule(decoded[:, 0]).squeeze(-1)


def _build(arch: str) -> PairVPR:
    # Hub register model: 4 registers, pos-embed interpolation offset 0 with antialias.
    return PairVPR(dinov2_hub(arch, registers=True))


def build_pairvpr_vitb() -> PairVPR:
    """Speed configuration (``pairvpr-vitB.pth``), random init."""
    return _build("vit_base")


def build_pairvpr_vitl() -> PairVPR:
    """ViT-L configuration (``pairvpr-vitL.pth``), random init."""
    return _build("vit_large")


def build_pairvpr_vitg() -> PairVPR:
    """Performance configuration (``pairvpr-vitG.pth``), random init."""
    return _build("vit_giant2")
