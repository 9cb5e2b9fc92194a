"""What every place-recognition model declares, independent of its architecture."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputPolicy:
    """How a camera image of any size becomes a network input.

    ``size`` is the native (height, width) the model was evaluated at. ``resize`` says how
    other aspect ratios are handled: ``"stretch"`` resizes straight to ``size`` (what the
    official evaluation scripts do), ``"center_crop"`` crops the largest centred region with
    the target aspect first. ``fixed`` models (Pair-VPR re-ranking, TransVPR geometry) only
    accept ``size``; others accept any (H, W) that are multiples of ``multiple_of``.
    """

    size: tuple[int, int]
    multiple_of: int = 1
    fixed: bool = False
    resize: str = "stretch"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Smallest (height, width) the model works at (SALAD needs more than 64 patches).
    min_size: tuple[int, int] = (1, 1)

    def validate_size(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = int(size[0]), int(size[1])
        if h < self.min_size[0] or w < self.min_size[1]:
            raise ValueError(f"input size {(h, w)} is below this model's minimum {self.min_size}")
        if self.fixed and (h, w) != tuple(self.size):
            raise ValueError(f"this model only accepts input size {self.size}, got {(h, w)}")
        if h % self.multiple_of or w % self.multiple_of:
            raise ValueError(f"input size {(h, w)} must be a multiple of {self.multiple_of}")
        return h, w


@dataclass(frozen=True)
class WeightsSpec:
    """Where the official checkpoint lives and how its file is laid out.

    ``container_key`` names the dict entry that holds the state dict (``None``: the file is
    the state dict); ``key_prefix`` is stripped from every key (``"module."`` for files saved
    from DataParallel). ``ignored_keys`` are entries of the file the model drops by design
    (pre-training leftovers); everything else must match the model exactly.
    """

    file_name: str
    url: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    container_key: str | None = None
    key_prefix: str = ""
    ignored_keys: tuple[str, ...] = ()
    licence: str = ""
    # Python package that ships the file (offline installs), and the path inside it.
    package: str | None = None
    package_path: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One row of the model registry: everything the rest of vpr_ros may know about a model."""

    name: str
    build: Callable[[], nn.Module]
    descriptor_dim: int
    input: InputPolicy
    weights: WeightsSpec | None
    # Local features the model can hand to a re-ranker, e.g. ("patch_tokens",).
    local_features: tuple[str, ...] = ()
    description: str = ""
    # Model-specific fix-ups applied to a loaded state dict before the strict load
    # (e.g. Pair-VPR rebuilds dec_pos_embed_cls at load time).
    adapt_state_dict: Callable[[dict], dict] | None = None
    extra: dict = field(default_factory=dict)


class VPRModel(nn.Module):
    """Base class: ``forward(images) -> [B, descriptor_dim]`` L2-normalised descriptors.

    ``images`` is a float tensor [B, 3, H, W], already normalised with the model's mean/std.
    Models that expose local features override ``extract`` to return them as well.
    """

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Global descriptor plus whatever local features the model exposes."""
        return {"global": self(images)}
