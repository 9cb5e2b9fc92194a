"""How a keyframe carries the model local features a re-ranker reads.

Which ones a re-ranker needs is its spec's ``local_features`` (registry.py). The descriptor
stage runs ``Encoder.extract`` instead of ``Encoder.encode`` only when the selected
re-ranker needs something the model exposes, and copies just those arrays into
``Keyframe.local_features`` (they travel in the Keyframe message to the re-ranker node).
Patch tokens come with ``patch_grid`` = [rows, cols, input height, input width], so a
re-ranker can place patch centres in the network input frame without knowing the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

PATCH_GRID = "patch_grid"
# Keys under which models hand out per-patch tokens (Pair-VPR calls its patch tokens "dense").
PATCH_TOKEN_KEYS = ("patch_tokens", "dense")


def patch_grid(num_patches: int, input_size: tuple[int, int], grid=None) -> np.ndarray:
    """[rows, cols, input_h, input_w] (float32) of ``num_patches`` row-major patch tokens.

    ``grid`` is the (rows, cols) a model reports (TransVPR does); otherwise square patches
    are assumed and the grid follows from the input size, which holds for ViTs.
    """
    h, w = int(input_size[0]), int(input_size[1])
    if grid is not None:
        rows, cols = (int(v) for v in np.asarray(grid).ravel()[:2])
    else:
        patch = math.sqrt(h * w / max(num_patches, 1))
        rows, cols = round(h / patch), round(w / patch)
    if rows * cols != num_patches:
        raise ValueError(f"{num_patches} patch tokens do not fill a {rows}x{cols} grid on a {h}x{w} input")
    return np.array([rows, cols, h, w], dtype=np.float32)


def keyframe_local_features(
    names: Iterable[str], outputs: Mapping[str, np.ndarray], input_size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """The arrays ``names`` of the first image of an ``Encoder.extract`` batch, float32.

    Patch tokens get their ``patch_grid`` alongside (``outputs["grid"]`` when the model gives one).
    """
    out = {name: np.ascontiguousarray(np.asarray(outputs[name][0], dtype=np.float32)) for name in names}
    tokens = next((out[k] for k in PATCH_TOKEN_KEYS if k in out), None)
    if tokens is not None:
        out[PATCH_GRID] = patch_grid(len(tokens), input_size, outputs.get("grid"))
    return out
