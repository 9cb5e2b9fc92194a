"""Transformer building blocks shared by the DINOv2-based models (one concept per file)."""

from .attention import Attention
from .block import Block, LayerScale
from .mlp import Mlp, SwiGLUFFN
from .patch_embed import PatchEmbed

__all__ = ["Attention", "Block", "LayerScale", "Mlp", "PatchEmbed", "SwiGLUFFN"]
