"""DINOv2-SALAD (serizba/salad): optimal-transport aggregation of DINOv2 patch tokens (docs/models.md §2.1).

Backbone: the hub non-register DINOv2 ViT-B/14 (offset 0.1, no antialias), all blocks and the
final norm. Aggregator: per-patch scores for 64 clusters, a 3-iteration log-domain Sinkhorn with
a dustbin row, 128-D per-patch features weighted into 64 clusters (each L2-normalised, flattened
l-major), concatenated with a 256-D projection of CLS. Output 8448-D, L2-normalised.

Key layout matches the official flat checkpoint ``dino_salad.ckpt``: ``backbone.model.*`` and
``aggregator.{dust_bin, token_features, cluster_features, score}.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import VPRModel
from .layers.optimal_transport import assign_with_dustbin
from .vit import HUB_NONREG_INTERPOLATION, DinoVisionTransformer, vit_base


def pointwise_mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    """Per-patch 2-layer MLP on a feature map, as 1x1 convs (indices 0 and 3 hold the weights)."""
    return nn.Sequential(
        nn.Conv2d(in_dim, hidden_dim, 1),
        nn.Dropout(dropout),
        nn.ReLU(),
        nn.Conv2d(hidden_dim, out_dim, 1),
    )


def token_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The CLS projection: Linear -> ReLU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


def aggregate(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[B, l, n] features and [B, k, n] weights -> [B, l * k]: per-cluster sums, L2 over l, l-major."""
    clusters = torch.bmm(features, weights.transpose(1, 2))  # [B, l, k]
    return F.normalize(clusters, p=2, dim=1).flatten(1)


class DinoBackbone(nn.Module):
    """SALAD's wrapper: the ViT sits under ``model`` and returns (patch map, CLS) after the final norm."""

    def __init__(self, model: DinoVisionTransformer):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = self.model.grid_size(*images.shape[-2:])
        out = self.model.forward_features(images)
        patch_map = out["patch"].reshape(-1, rows, cols, self.model.embed_dim).permute(0, 3, 1, 2)
        return patch_map, out["cls"]


class SaladAggregator(nn.Module):
    def __init__(
        self,
        num_channels: int = 768,
        num_clusters: int = 64,
        cluster_dim: int = 128,
        token_dim: int = 256,
        hidden_dim: int = 512,
        dropout: float = 0.3,
        sinkhorn_iters: int = 3,
    ):
        super().__init__()
        self.sinkhorn_iters = sinkhorn_iters
        self.token_features = token_mlp(num_channels, hidden_dim, token_dim)
        self.cluster_features = pointwise_mlp(num_channels, hidden_dim, cluster_dim, dropout)
        self.score = pointwise_mlp(num_channels, hidden_dim, num_clusters, dropout)
        self.dust_bin = nn.Parameter(torch.tensor(1.0))

    def forward(self, patch_map: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        features = self.cluster_features(patch_map).flatten(2)  # [B, l, n]
        scores = self.score(patch_map).flatten(2)  # [B, k, n]
        weights = assign_with_dustbin(scores, self.dust_bin, self.sinkhorn_iters)
        token = F.normalize(self.token_features(cls), p=2, dim=-1)
        return F.normalize(torch.cat((token, aggregate(features, weights)), dim=-1), p=2, dim=-1)


class Salad(VPRModel):
    def __init__(self, backbone: DinoBackbone, aggregator: SaladAggregator):
        super().__init__()
        self.backbone = backbone
        self.aggregator = aggregator

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.aggregator(*self.backbone(images))


def build_salad() -> Salad:
    """DINOv2-SALAD with random weights; load ``dino_salad.ckpt`` over it."""
    offset, antialias = HUB_NONREG_INTERPOLATION
    vit = vit_base(num_register_tokens=0, interpolate_offset=offset, interpolate_antialias=antialias)
    return Salad(DinoBackbone(vit), SaladAggregator())
