"""DINOv2 vision transformer (patch 14), written so the official checkpoints load with strict=True.

State-dict keys are exactly those of the official hub models (docs/models.md §1.3): ``cls_token``,
``pos_embed``, ``register_tokens`` (register variants only), ``mask_token``, ``patch_embed.proj.*``,
``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.*,ls2.gamma}``, ``norm.*``.

Token order is ``[CLS, registers, patches]``; registers get no positional embedding. The 37x37
positional grid is resized bicubically for other inputs, with one of two conventions (docs/models.md §1.4)
that the VPR models do not agree on, so every builder takes them explicitly:

* ``interpolate_offset=0.1, interpolate_antialias=False``: hub non-register models, SALAD, ImAge;
* ``interpolate_offset=0.0, interpolate_antialias=True``: hub register models, Pair-VPR.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Block, Mlp, PatchEmbed, SwiGLUFFN

# Convention names for the two positional-embedding interpolation settings, as (offset, antialias).
HUB_NONREG_INTERPOLATION = (0.1, False)
HUB_REG_INTERPOLATION = (0.0, True)


class DinoVisionTransformer(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        patch_size: int = 14,
        img_size: int = 518,
        in_chans: int = 3,
        num_register_tokens: int = 0,
        init_values: float | None = 1.0,
        ffn: type[nn.Module] = Mlp,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
        block: Callable[..., nn.Module] = Block,
    ):
        """``block`` builds each transformer block as ``block(dim, heads, mlp_ratio, init_values=, ffn=)``;
        models that extend DINOv2's block (RegVPR's adapter) pass their subclass."""
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.interpolate_offset = float(interpolate_offset)
        self.interpolate_antialias = bool(interpolate_antialias)
        self.pos_grid = img_size // patch_size  # 37 for the official 518 px pre-training size

        # Registration order reproduces the official state_dict() order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pos_grid**2, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        )
        # Only used by masked pre-training; kept so the official files load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.blocks = nn.ModuleList(
            block(embed_dim, num_heads, mlp_ratio, init_values=init_values, ffn=ffn) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    @property
    def num_prefix_tokens(self) -> int:
        """CLS plus registers: the tokens in front of the patches."""
        return 1 + self.num_register_tokens

    def _init_weights(self) -> None:
        # Random init for tests and training from scratch; real use loads a checkpoint over it.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch rows and columns for an input of ``height`` x ``width`` pixels."""
        return height // self.patch_size, width // self.patch_size

    def interpolate_pos_encoding(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        """Positional embedding [1, 1 + rows * cols, D] for a rows x cols patch grid."""
        grid = self.pos_grid
        if (rows, cols) == (grid, grid):
            return self.pos_embed.to(dtype)
        # Resized in float32 whatever the model dtype, as the official code does.
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        patch_pos = patch_pos.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            # A scale factor (not a size) changes bicubic's sampling positions; the offset keeps
            # floor(grid * scale) from rounding below the wanted size.
            scale = ((rows + self.interpolate_offset) / grid, (cols + self.interpolate_offset) / grid)
            resize = {"scale_factor": scale}
        else:
            resize = {"size": (rows, cols)}
        patch_pos = F.interpolate(patch_pos, mode="bicubic", antialias=self.interpolate_antialias, **resize)
        if patch_pos.shape[-2:] != (rows, cols):
            raise RuntimeError(f"pos-embed resize gave {tuple(patch_pos.shape[-2:])}, wanted {(rows, cols)}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat((cls_pos, patch_pos), dim=1).to(dtype)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] -> tokens [B, 1 + registers + patches, D], before any block."""
        rows, cols = self.grid_size(*x.shape[-2:])
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_encoding(rows, cols, tokens.dtype)
        if self.register_tokens is not None:
            registers = self.register_tokens.expand(tokens.shape[0], -1, -1)
            tokens = torch.cat((tokens[:, :1], registers, tokens[:, 1:]), dim=1)
        return tokens

    def run_blocks(self, tokens: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Apply blocks ``start`` .. ``end - 1`` (Python slice semantics)."""
        for block in self.blocks[start:end]:
            tokens = block(tokens)
        return tokens

    def split_tokens(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Name the parts of a [CLS, registers, patches] sequence."""
        r = self.num_register_tokens
        return {"cls": tokens[:, 0], "registers": tokens[:, 1 : 1 + r], "patch": tokens[:, 1 + r :]}

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All blocks and the final norm: ``cls`` [B, D], ``registers`` [B, R, D], ``patch`` [B, N, D]."""
        return self.split_tokens(self.norm(self.run_blocks(self.prepare_tokens(x))))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_features(x)


# Named configurations of the official hub (dinov2/hub/backbones.py): width, depth, heads, FFN.
_ARCHS = {
    "vit_small": {"embed_dim": 384, "depth": 12, "num_heads": 6, "ffn": Mlp},
    "vit_base": {"embed_dim": 768, "depth": 12, "num_heads": 12, "ffn": Mlp},
    "vit_large": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "ffn": Mlp},
    "vit_giant2": {"embed_dim": 1536, "depth": 40, "num_heads": 24, "ffn": SwiGLUFFN},
}


def _build(arch: str, num_register_tokens: int, interpolate_offset: float, interpolate_antialias: bool, **kw):
    return DinoVisionTransformer(
        **_ARCHS[arch],
        num_register_tokens=num_register_tokens,
        interpolate_offset=interpolate_offset,
        interpolate_antialias=interpolate_antialias,
        **kw,
    )


def vit_small(num_register_tokens=0, interpolate_offset=0.1, interpolate_antialias=False, **kw):
    return _build("vit_small", num_register_tokens, interpolate_offset, interpolate_antialias, **kw)


def vit_base(num_register_tokens=0, interpolate_offset=0.1, interpolate_antialias=False, **kw):
    return _build("vit_base", num_register_tokens, interpolate_offset, interpolate_antialias, **kw)


def vit_large(num_register_tokens=0, interpolate_offset=0.1, interpolate_antialias=False, **kw):
    return _build("vit_large", num_register_tokens, interpolate_offset, interpolate_antialias, **kw)


def vit_giant2(num_register_tokens=0, interpolate_offset=0.1, interpolate_antialias=False, **kw):
    return _build("vit_giant2", num_register_tokens, interpolate_offset, interpolate_antialias, **kw)


def dinov2_hub(arch: str, registers: bool) -> DinoVisionTransformer:
    """The model ``torch.hub`` builds for ``dinov2_vit{s,b,l,g}14[_reg]``, with its interpolation defaults."""
    offset, antialias = HUB_REG_INTERPOLATION if registers else HUB_NONREG_INTERPOLATION
    return _build(arch, 4 if registers else 0, offset, antialias)
