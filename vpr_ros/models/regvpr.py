"""RegVPR ("Register assisted aggregation for Visual Place Recognition", Yu & Fu), rebuilt from the paper.

No official code or weights exist (docs/models.md §6.1), so this model must be trained before use.
Pipeline (paper Fig. 3): a DINOv2 ViT-B/14 with a multi-scale "global adapter" in every block
gives patch tokens t_i and a CLS token; a score MLP and an optimal-transport step (Sinkhorn,
SALAD-style but without dustbin) give feature-to-cluster weights; patch tokens and k learnable
registers go through the same dimension reduction; a 2-layer pre-norm transformer encoder runs
over [local descriptors; registers]; the registers are rejected; the remaining local
descriptors are aggregated into 64 clusters and concatenated with the projected global token:
128 x 64 + 256 = 8448-D, L2-normalised.

Choices the paper leaves open, and what this file does:

1. Backbone: DINOv2 ViT-B/14 *without* registers, with the hub non-register interpolation
   (offset 0.1, no antialias). The paper ablates against SALAD on the same backbone, and SALAD
   uses this one; its DINOv2 weights then load into ``backbone.model`` with only the adapter
   keys missing.
2. Global adapter (Eq. 4, s = 0.2): in all 12 blocks, fed with norm2's output, added to the FFN
   output *inside* LayerScale ``ls2`` (Eq. 4 is written for a block without LayerScale; CricaVPR,
   which the paper builds on, puts its adapter there too).
3. Multi-scale fusion module (MFF), bottleneck 0.5 as stated: Linear 768->384 + ReLU (down);
   patch tokens as a map; 1x1 conv 384->96 + ReLU (the "reduce" step; 96 is our choice); three
   parallel convs 1x1 / 3x3 / 5x5, 96->128 each + ReLU, concatenated to 384; a 1x1 conv 384->384
   (the "final 1x1" the paper names); a skip from the down-projected input (as in CricaVPR, it
   is also the only path for CLS, which has no place on the map); Linear 384->768 (up). Convs
   carry biases and no BatchNorm ("simple convolutions"), so outputs do not depend on the batch.
   The up projection starts at zero, so a fresh adapter leaves pretrained DINOv2 unchanged.
4. Score projection (Eq. 5), dimension reduction (Eq. 6) and global projection (Eq. 7): SALAD's
   heads with SALAD's names and shapes (hidden 512, ReLU, dropout 0.3 on the score and
   reduction heads), so ``dino_salad.ckpt`` can initialise them. The text says the global token
   is also reduced to 128, but 8448 = 128 x 64 + 256 needs 256 (as in SALAD): we keep 256.
5. Optimal transport without dustbin: 3 log-domain Sinkhorn iterations (SALAD's count), uniform
   marginals: each patch spreads a weight of 1 over the 64 clusters, each cluster receives n/64.
   The weights come from the backbone tokens, before the encoder.
6. Registers: 4 (the best count in the paper's Fig. 6), learnable 768-D vectors initialised
   N(0, 1) (the scale of final-norm tokens), passed through the same dimension reduction as the
   patch tokens ("local descriptors with registers after dimensionality-reduction").
7. Encoder: 2 pre-norm layers (Fig. 6), width 128, 4 heads, GELU MLP 512, LayerNorm eps 1e-6,
   no LayerScale, no positional embedding (the tokens carry the backbone's), no final norm.
8. Aggregation: after rejecting the registers, the encoder outputs of the patches are summed
   per cluster with the OT weights, each cluster L2-normalised and flattened l-major; final
   descriptor L2([L2(g); clusters]) as in SALAD.
9. Input: trained at 224x224 (paper); evaluated here at 322x322 like SALAD. Any multiple of 14.

State-dict layout: ``backbone.model.*`` (DINOv2 keys plus ``blocks.{i}.adapter.*``),
``aggregator.{token_features,cluster_features,score}.*`` (SALAD's), ``aggregator.registers``,
``aggregator.encoder.{0,1}.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import VPRModel
from .layers import Block
from .layers.optimal_transport import assign_balanced
from .salad import aggregate, pointwise_mlp, token_mlp
from .vit import HUB_NONREG_INTERPOLATION, DinoVisionTransformer, vit_base

ADAPTER_SCALE = 0.2


class MultiScaleAdapter(nn.Module):
    """Down-project, fuse 1x1/3x3/5x5 views of the patch map, up-project (choice 3)."""

    def __init__(self, dim: int, bottleneck: int = 384, reduced: int = 96, branch: int = 128):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.reduce = nn.Conv2d(bottleneck, reduced, 1)
        self.branches = nn.ModuleList(nn.Conv2d(reduced, branch, k, padding=k // 2) for k in (1, 3, 5))
        self.fuse = nn.Conv2d(3 * branch, bottleneck, 1)
        self.up = nn.Linear(bottleneck, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], num_prefix: int) -> torch.Tensor:
        h = F.relu(self.down(x))
        prefix, patches = h[:, :num_prefix], h[:, num_prefix:]
        fmap = patches.transpose(1, 2).reshape(h.shape[0], -1, *grid)
        fmap = F.relu(self.reduce(fmap))
        fmap = self.fuse(torch.cat([F.relu(conv(fmap)) for conv in self.branches], dim=1))
        patches = patches + fmap.flatten(2).transpose(1, 2)
        return self.up(torch.cat((prefix, patches), dim=1))


class AdaptedBlock(Block):
    """DINOv2 block with the adapter beside the FFN: x + ls2(mlp(h) + s * adapter(h)), h = norm2(x)."""

    def __init__(self, dim: int, *args, **kwargs):
        super().__init__(dim, *args, **kwargs)
        self.adapter = MultiScaleAdapter(dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        h = self.norm2(x)
        num_prefix = x.shape[1] - grid[0] * grid[1]
        return x + self.ls2(self.mlp(h) + ADAPTER_SCALE * self.adapter(h, grid, num_prefix))


class AdaptedDinoBackbone(nn.Module):
    """The ViT under ``model`` (SALAD's layout); returns final-norm (patch map, CLS)."""

    def __init__(self, model: DinoVisionTransformer):
        super().__init__()
        self.model = model
        for block in model.blocks:
            nn.init.zeros_(block.adapter.up.weight)
            nn.init.zeros_(block.adapter.up.bias)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vit = self.model
        grid = vit.grid_size(*images.shape[-2:])
        tokens = vit.prepare_tokens(images)
        for block in vit.blocks:
            tokens = block(tokens, grid)
        out = vit.split_tokens(vit.norm(tokens))
        patch_map = out["patch"].transpose(1, 2).reshape(images.shape[0], vit.embed_dim, *grid)
        return patch_map, out["cls"]


class RegisterAggregator(nn.Module):
    def __init__(
        self,
        num_channels: int = 768,
        num_clusters: int = 64,
        cluster_dim: int = 128,
        token_dim: int = 256,
        hidden_dim: int = 512,
        dropout: float = 0.3,
        num_registers: int = 4,
        encoder_layers: int = 2,
        encoder_heads: int = 4,
        sinkhorn_iters: int = 3,
    ):
        super().__init__()
        self.sinkhorn_iters = sinkhorn_iters
        self.token_features = token_mlp(num_channels, hidden_dim, token_dim)
        self.cluster_features = pointwise_mlp(num_channels, hidden_dim, cluster_dim, dropout)
        self.score = pointwise_mlp(num_channels, hidden_dim, num_clusters, dropout)
        self.registers = nn.Parameter(torch.randn(1, num_registers, num_channels))
        self.encoder = nn.ModuleList(
            Block(cluster_dim, encoder_heads, mlp_ratio=4.0, init_values=None) for _ in range(encoder_layers)
        )

    def forward(self, patch_map: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        weights = assign_balanced(self.score(patch_map).flatten(2), self.sinkhorn_iters)  # [B, m, n]
        local = self.cluster_features(patch_map).flatten(2)  # [B, l, n]
        # The registers pass through the same reduction, seen as a 1-pixel-wide map [1, C, k, 1].
        registers = self.cluster_features(self.registers.transpose(1, 2).unsqueeze(-1)).flatten(2)
        n = local.shape[-1]
        seq = torch.cat((local, registers.expand(local.shape[0], -1, -1)), dim=2).transpose(1, 2)
        for block in self.encoder:
            seq = block(seq)
        local = seq[:, :n].transpose(1, 2)  # reject the registers
        token = F.normalize(self.token_features(cls), p=2, dim=-1)
        return F.normalize(torch.cat((token, aggregate(local, weights)), dim=-1), p=2, dim=-1)


class RegVPR(VPRModel):
    def __init__(self, backbone: AdaptedDinoBackbone, aggregator: RegisterAggregator):
        super().__init__()
        self.backbone = backbone
        self.aggregator = aggregator

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.aggregator(*self.backbone(images))


def build_regvpr() -> RegVPR:
    """RegVPR with random weights (no official checkpoint exists)."""
    offset, antialias = HUB_NONREG_INTERPOLATION
    vit = vit_base(interpolate_offset=offset, interpolate_antialias=antialias, block=AdaptedBlock)
    return RegVPR(AdaptedDinoBackbone(vit), RegisterAggregator())
