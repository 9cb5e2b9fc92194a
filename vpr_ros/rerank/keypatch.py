"""TransVPR key-patch re-ranking: mutual nearest patches + homography RANSAC (docs/models.md §5.5).

Per (query, candidate): key patches are those whose fused attention exceeds ``threshold``
(0.02); their raw dot-product similarities give mutual nearest-neighbour patch pairs
(``keypatch_matching.mutual_nn_matches``, checked against the official fixture); the patch
centres of the pairs go into ``cv2.findHomography`` with RANSAC and a reprojection threshold
of ``ransac_factor`` (1.5) x the patch size in network-input pixels (24 px for TransVPR's
16 px patches at 480x640). The score is the RANSAC inlier count (0 below 4 matches).

Other models' patch tokens work too (ImAge ``patch_tokens``, Pair-VPR ``dense``): without an
``attention`` map every patch is a key patch, and the grid and patch size come from the
keyframe's ``patch_grid`` (set by the descriptor stage from the model's input size).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..feature_store import FeatureStore
from ..types import Candidate, Keyframe, Verification
from .base import RerankerContext, RerankerSpec, param, sort_verifications
from .features import PATCH_GRID, PATCH_TOKEN_KEYS
from .keypatch_matching import KEY_PATCH_THRESHOLD, mutual_nn_matches

MIN_HOMOGRAPHY_MATCHES = 4


@dataclass
class KeyPatchResult:
    inliers: int  # the score
    matches: int  # mutual nearest-neighbour patch pairs (the deterministic part)
    reason: str
    homography: np.ndarray | None = None  # query input pixels -> candidate input pixels


def patch_centres(grid) -> np.ndarray:
    """[rows*cols, 2] (x, y) centres of row-major patches in input pixels.

    ``grid`` is [rows, cols, input_h, input_w]. As the official code: x = linspace(p/2, W - p/2, cols),
    y likewise (8 .. 632 and 8 .. 472 for 40x30 patches of 16 px on 640x480).
    """
    rows, cols, h, w = (float(v) for v in np.asarray(grid, dtype=np.float64)[:4])
    rows, cols = int(rows), int(cols)
    ph, pw = h / rows, w / cols
    xs = np.linspace(pw / 2, w - pw / 2, cols)
    ys = np.linspace(ph / 2, h - ph / 2, rows)
    gx, gy = np.meshgrid(xs, ys)  # row-major: index = row * cols + col
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def patch_size(grid) -> float:
    rows, cols, h, w = (float(v) for v in np.asarray(grid, dtype=np.float64)[:4])
    return float(np.sqrt((h / rows) * (w / cols)))


@dataclass(frozen=True)
class KeyPatchParams:
    """Parameters ``keypatch_<field>``: the one home of their defaults."""

    threshold: float = param(
        KEY_PATCH_THRESHOLD, "key patches: fused attention above this (all patches without one)"
    )
    ransac_factor: float = param(
        1.5, "homography RANSAC threshold in patch sizes (1.5 x 16 px)", range=(0.0, None)
    )
    min_inliers: int = param(20, "minimum homography inliers for a key-patch pass", range=(0, None))


_DEFAULTS = KeyPatchParams()


class KeyPatchReranker:
    name = "keypatch"

    def __init__(
        self,
        threshold: float = _DEFAULTS.threshold,
        ransac_factor: float = _DEFAULTS.ransac_factor,
        min_inliers: int = _DEFAULTS.min_inliers,
        max_iters: int = 2000,
        confidence: float = 0.995,
        feature_store: FeatureStore | None = None,
    ):
        """``min_inliers`` only decides pass/fail; the official re-ranker has no such cut and
        only sorts by inliers (its RANSAC settings: OpenCV defaults 2000 iterations, 0.995)."""
        self.threshold = float(threshold)
        self.ransac_factor = float(ransac_factor)
        self.min_inliers = int(min_inliers)
        self.max_iters = int(max_iters)
        self.confidence = float(confidence)
        self.store = feature_store if feature_store is not None else FeatureStore()

    # -- features -------------------------------------------------------------------------
    @staticmethod
    def patch_features(keyframe: Keyframe) -> tuple[dict | None, str]:
        """(what matching needs, '') or (None, why the keyframe cannot be matched)."""
        local = keyframe.local_features
        key = next((k for k in PATCH_TOKEN_KEYS if k in local), None)
        if key is None:
            return None, "has no patch tokens (run a model that exposes them: transvpr, image or pairvpr)"
        tokens = np.asarray(local[key])
        if tokens.ndim != 2 or len(tokens) == 0:
            return None, f"has patch tokens of shape {tokens.shape}, expected [patches, channels]"
        grid = local.get(PATCH_GRID)
        if grid is None or np.size(grid) < 4:
            return None, "has patch tokens but no patch_grid"
        rows, cols = (int(v) for v in np.asarray(grid).ravel()[:2])
        if rows * cols != len(tokens):
            return None, f"patch_grid {rows}x{cols} does not match {len(tokens)} patch tokens"
        out = {"tokens": tokens, PATCH_GRID: np.asarray(grid, np.float32).ravel()[:4]}
        if "attention" in local:
            attention = np.asarray(local["attention"]).ravel()
            if attention.shape != (len(tokens),):
                return None, f"attention has {attention.size} values for {len(tokens)} patches"
            out["attention"] = attention
        return out, ""

    def add_keyframe(self, keyframe: Keyframe) -> None:
        feats, _ = self.patch_features(keyframe)
        if feats is not None:
            self.store.put(keyframe.id, feats, exact=(PATCH_GRID,))

    def reset(self) -> None:
        self.store.clear()

    # -- matching -------------------------------------------------------------------------
    def _key_patch_saliency(self, feats: dict) -> np.ndarray:
        attention = feats.get("attention")
        if attention is None:  # no attention map: every patch is a key patch
            return np.ones(len(feats["tokens"]), np.float32)
        return np.asarray(attention, np.float32)

    def match_patches(self, feats_q: dict, feats_db: dict) -> np.ndarray:
        """Mutual nearest-neighbour pairs [M, 2] of (query patch, database patch)."""
        return mutual_nn_matches(
            feats_q["tokens"],
            feats_db["tokens"],
            self._key_patch_saliency(feats_q),
            self._key_patch_saliency(feats_db),
            self.threshold,
        )

    def verify_pair(self, feats_q: dict, feats_db: dict) -> KeyPatchResult:
        """Mutual matches, homography RANSAC and the inlier count for one pair (never raises)."""
        if np.shape(feats_q["tokens"])[1] != np.shape(feats_db["tokens"])[1]:
            reason = "query and candidate patch tokens have different widths (different models?)"
            return KeyPatchResult(0, 0, reason)
        pairs = self.match_patches(feats_q, feats_db)
        n = len(pairs)
        if n < MIN_HOMOGRAPHY_MATCHES:
            return KeyPatchResult(0, n, f"too few mutual patch matches ({n} < {MIN_HOMOGRAPHY_MATCHES})")
        pts_q = patch_centres(feats_q[PATCH_GRID])[pairs[:, 0]].astype(np.float32)
        pts_db = patch_centres(feats_db[PATCH_GRID])[pairs[:, 1]].astype(np.float32)
        threshold = self.ransac_factor * patch_size(feats_q[PATCH_GRID])
        try:
            model, mask = cv2.findHomography(
                pts_q, pts_db, cv2.RANSAC, threshold, maxIters=self.max_iters, confidence=self.confidence
            )
        except cv2.error:
            model = mask = None
        # As the official code: no model (or no mask) scores 0. Never trust a mask that does not fit.
        if model is None or mask is None or model.shape != (3, 3) or mask.size != n:
            return KeyPatchResult(0, n, f"no homography fits the {n} mutual patch matches")
        inliers = int(np.count_nonzero(mask))
        return KeyPatchResult(inliers, n, f"{inliers} homography inliers of {n} mutual patch matches", model)

    def verify(self, query: Keyframe, candidates: list[Candidate]) -> list[Verification]:
        if not candidates:
            return []
        feats_q, problem = self.patch_features(query)
        if feats_q is None and query.id in self.store:
            feats_q, problem = self.store.get(query.id), ""
        if feats_q is None:
            return [Verification(c, 0.0, 0, False, f"query keyframe {problem}") for c in candidates]
        results = []
        for cand in candidates:
            feats_db = self.store.get(cand.id)
            if feats_db is None:
                reason = "candidate keyframe has no patch tokens in the feature store"
                results.append(Verification(cand, 0.0, 0, False, reason))
                continue
            result = self.verify_pair(feats_q, feats_db)
            inliers, reason = result.inliers, result.reason
            passed = inliers >= self.min_inliers
            if not passed and inliers:
                reason += f" (< {self.min_inliers})"
            results.append(Verification(cand, float(inliers), inliers, passed, reason))
        return sort_verifications(results)


def _local_features(exposed: tuple[str, ...]) -> tuple[str, ...]:
    """The model's patch tokens, with its attention map when it has one."""
    tokens = next((k for k in PATCH_TOKEN_KEYS if k in exposed), None)
    if tokens is None:
        return ()
    return (tokens, "attention") if "attention" in exposed else (tokens,)


def _build(params: KeyPatchParams, context: RerankerContext) -> KeyPatchReranker:
    return KeyPatchReranker(**asdict(params), feature_store=context.feature_store)


SPEC = RerankerSpec(
    name="keypatch",
    params=KeyPatchParams,
    build=_build,
    description="TransVPR key-patch matches + homography RANSAC (needs a model with patch tokens)",
    local_features=_local_features,
)
