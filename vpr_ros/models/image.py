"""ImAge (Lu-Feng/ImAge, NeurIPS 2025): implicit aggregation tokens inside DINOv2 (docs/models.md §3.1).

Eight learnable aggregation tokens are prepended to the token sequence before block 8 of a
DINOv2 ViT-B/14 with 4 registers; the last four blocks let them attend to the image. After the
final norm the eight tokens, flattened token-major, are the 6144-D descriptor (one L2 norm).

The official backbone is a bundled DINOv2 copy whose builder keeps the non-register
interpolation defaults (offset 0.1, no antialias) although its weights are the reg4 ones; the
hub register convention would move the descriptor by several percent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import VPRModel
from .vit import HUB_NONREG_INTERPOLATION, DinoVisionTransformer, vit_base


class ImAge(VPRModel):
    def __init__(self, backbone: DinoVisionTransformer, num_tokens: int = 8, insert_before: int = 8):
        super().__init__()
        # Parameter names match the official VPRmodel, so its state dict loads strictly
        # once the DataParallel "module." prefix is stripped.
        self.learnable_aggregation_tokens = nn.Parameter(torch.zeros(1, num_tokens, backbone.embed_dim))
        nn.init.normal_(self.learnable_aggregation_tokens, std=0.02)
        self.backbone = backbone
        self.insert_before = insert_before

    @property
    def num_tokens(self) -> int:
        return self.learnable_aggregation_tokens.shape[1]

    def _final_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Final-norm sequence [A1..AM, CLS, registers, patches]."""
        vit = self.backbone
        tokens = vit.run_blocks(vit.prepare_tokens(images), 0, self.insert_before)
        # The aggregation tokens join in front, without positional embedding.
        agg = self.learnable_aggregation_tokens.expand(tokens.shape[0], -1, -1)
        tokens = vit.run_blocks(torch.cat((agg, tokens), dim=1), self.insert_before)
        return vit.norm(tokens)

    def _descriptor(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(tokens[:, : self.num_tokens].flatten(1), p=2, dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._descriptor(self._final_tokens(images))

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``global`` [B, 6144] and ``patch_tokens`` [B, N, 768] (final norm, row-major grid)."""
        tokens = self._final_tokens(images)
        first_patch = self.num_tokens + self.backbone.num_prefix_tokens
        return {"global": self._descriptor(tokens), "patch_tokens": tokens[:, first_patch:]}


def build_image() -> ImAge:
    """ImAge with random weights; load ``ImAge_Merged.pth`` / ``ImAge_GSV.pth`` over it."""
    offset, antialias = HUB_NONREG_INTERPOLATION
    backbone = vit_base(num_register_tokens=4, interpolate_offset=offset, interpolate_antialias=antialias)
    return ImAge(backbone)
