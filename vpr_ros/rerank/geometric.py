"""Classical geometric verification with OpenCV: local features, matching, RANSAC, pose.

For each (query, candidate) pair: SIFT (or ORB) keypoints, ratio test plus mutual check,
then RANSAC on an essential matrix when both cameras have intrinsics (a fundamental matrix
otherwise). The score is the RANSAC inlier count. With intrinsics the relative rotation and
translation direction come from the essential matrix; with an aligned depth image of the
query, PnP on the inliers gives a metric pose. Every rejection carries a short reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..feature_store import FeatureStore
from ..types import Candidate, Keyframe, RelativePose, Verification
from .base import sort_verifications


@dataclass
class MatchResult:
    query_pts: np.ndarray  # [M, 2] pixel coordinates in the query image
    match_pts: np.ndarray  # [M, 2] in the candidate image
    query_idx: np.ndarray  # [M] keypoint indices into the query's features


def _to_gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _normalise(points: np.ndarray, camera_matrix: np.ndarray) -> np.ndarray:
    return cv2.undistortPoints(points.reshape(-1, 1, 2).astype(np.float64), camera_matrix, None).reshape(
        -1, 2
    )


def _spread(points: np.ndarray, image_shape: tuple[int, int]) -> tuple[float, float]:
    """(fraction of the image covered by the inliers' hull, smallest/largest principal axis)."""
    if len(points) < 3:
        return 0.0, 0.0
    hull_area = float(cv2.contourArea(cv2.convexHull(points.astype(np.float32))))
    coverage = hull_area / float(image_shape[0] * image_shape[1])
    sv = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return coverage, float(sv[1] / max(sv[0], 1e-9))


def pose_covariance(inliers: int, coverage: float, metric: bool) -> np.ndarray:
    """A 6x6 covariance that grows when inliers are few or bunched in a small image region.

    Rotation std is 2 degrees scaled by sqrt(50 / inliers) and by 1/sqrt(coverage/0.25)
    (capped), translation std 0.1 m under the same scaling when metric; a direction-only
    translation gets 1e3 m^2 so back ends treat its scale as unknown.
    """
    quality = np.sqrt(50.0 / max(inliers, 1)) * np.sqrt(0.25 / max(coverage, 0.01))
    rot_std = np.deg2rad(2.0) * quality
    trans_var = (0.1 * quality) ** 2 if metric else 1e3
    return np.diag([trans_var] * 3 + [rot_std**2] * 3)


class GeometricVerifier:
    name = "geometric"

    def __init__(
        self,
        feature: str = "sift",
        max_features: int = 1000,
        ratio: float = 0.8,
        min_matches: int = 20,
        min_inliers: int = 30,
        ransac_threshold_px: float = 2.0,
        confidence: float = 0.999,
        min_spread: float = 0.05,
        feature_store: FeatureStore | None = None,
    ):
        if feature not in ("sift", "orb"):
            raise ValueError(f"feature must be 'sift' or 'orb', got '{feature}'")
        self.feature = feature
        self.detector = (
            cv2.SIFT_create(nfeatures=max_features) if feature == "sift" else cv2.ORB_create(max_features)
        )
        norm = cv2.NORM_L2 if feature == "sift" else cv2.NORM_HAMMING
        self.matcher = cv2.BFMatcher(norm)
        self.ratio = ratio
        self.min_matches = max(8, min_matches)  # 8 points is the least RANSAC can work with
        self.min_inliers = min_inliers
        self.threshold = ransac_threshold_px
        self.confidence = confidence
        self.min_spread = min_spread
        self.store = feature_store or FeatureStore()
        # Per map keyframe: intrinsics of its stored image (None when unknown).
        self._intrinsics: dict[int, np.ndarray | None] = {}

    # -- features -------------------------------------------------------------------------
    def features(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Keypoints [N,2] float32 and descriptors (SIFT stored as uint8: values are 0..255)."""
        kps, desc = self.detector.detectAndCompute(_to_gray(image), None)
        if desc is None or not kps:
            dim = 128 if self.feature == "sift" else 32
            return {"keypoints": np.zeros((0, 2), np.float32), "descriptors": np.zeros((0, dim), np.uint8)}
        pts = np.array([kp.pt for kp in kps], dtype=np.float32)
        if self.feature == "sift":
            desc = np.clip(np.rint(desc), 0, 255).astype(np.uint8)
        return {"keypoints": pts, "descriptors": desc}

    def add_keyframe(self, keyframe: Keyframe) -> None:
        if keyframe.image is None:
            return
        self.store.put(keyframe.id, self.features(keyframe.image))
        self._intrinsics[keyframe.id] = keyframe.camera_matrix

    # -- matching -------------------------------------------------------------------------
    def match(self, feats_q: dict, feats_m: dict) -> MatchResult:
        dq, dm = np.asarray(feats_q["descriptors"]), np.asarray(feats_m["descriptors"])
        empty = MatchResult(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, int))
        if len(dq) < 2 or len(dm) < 2:
            return empty
        if self.feature == "sift":
            dq, dm = dq.astype(np.float32), dm.astype(np.float32)
        forward = self.matcher.knnMatch(dq, dm, k=2)
        backward = self.matcher.match(dm, dq)
        best_back = {m.queryIdx: m.trainIdx for m in backward}
        pairs = [
            (m[0].queryIdx, m[0].trainIdx)
            for m in forward
            if len(m) == 2
            and m[0].distance < self.ratio * m[1].distance
            and best_back.get(m[0].trainIdx) == m[0].queryIdx
        ]
        if not pairs:
            return empty
        qi, mi = np.array(pairs).T
        kq, km = np.asarray(feats_q["keypoints"]), np.asarray(feats_m["keypoints"])
        return MatchResult(kq[qi].astype(np.float64), km[mi].astype(np.float64), qi)

    # -- verification ---------------------------------------------------------------------
    def verify_pair(
        self,
        feats_q: dict,
        feats_m: dict,
        query_shape: tuple[int, int],
        k_query: np.ndarray | None = None,
        k_match: np.ndarray | None = None,
        depth_query: np.ndarray | None = None,
    ) -> tuple[int, bool, str, RelativePose | None]:
        """(inliers, passed, reason, relative pose) for one image pair."""
        m = self.match(feats_q, feats_m)
        n = len(m.query_pts)
        if n < self.min_matches:
            return 0, False, f"too few matches ({n} < {self.min_matches})", None
        use_essential = k_query is not None and k_match is not None
        if use_essential:
            pq, pm = _normalise(m.query_pts, k_query), _normalise(m.match_pts, k_match)
            focal = float(np.mean([k_query[0, 0], k_query[1, 1], k_match[0, 0], k_match[1, 1]]))
            model, mask = cv2.findEssentialMat(
                pq, pm, np.eye(3), cv2.RANSAC, self.confidence, self.threshold / focal
            )
        else:
            model, mask = cv2.findFundamentalMat(
                m.query_pts, m.match_pts, cv2.FM_RANSAC, self.threshold, self.confidence
            )
        # OpenCV may return several stacked 3x3 solutions or a mask that does not fit the input.
        if model is None or mask is None or model.shape != (3, 3) or mask.size != n:
            return 0, False, "RANSAC found no single consistent model", None
        inlier_mask = mask.ravel().astype(bool)
        inliers = int(inlier_mask.sum())
        if inliers < self.min_inliers:
            return inliers, False, f"too few inliers ({inliers} < {self.min_inliers})", None
        coverage, elongation = _spread(m.query_pts[inlier_mask], query_shape)
        if elongation < 0.05:
            return inliers, False, "degenerate: inliers are nearly collinear", None
        if coverage < self.min_spread:
            return (
                inliers,
                False,
                f"inliers cover {coverage:.1%} of the image (< {self.min_spread:.0%})",
                None,
            )
        pose = None
        if use_essential:
            pose = self._relative_pose(model, pq, pm, inlier_mask, m, k_query, k_match, depth_query, coverage)
        return inliers, True, f"{inliers} inliers of {n} matches", pose

    def _relative_pose(self, essential, pq, pm, inlier_mask, m, k_query, k_match, depth_query, coverage):
        if depth_query is not None:
            metric = self._pnp_pose(m, inlier_mask, k_query, k_match, depth_query, coverage)
            if metric is not None:
                return metric
        # recoverPose(E, p1, p2) gives x2 = R x1 + t, i.e. match_T_query for p1 = query.
        count, rotation, translation, _ = cv2.recoverPose(
            essential, pq[inlier_mask], pm[inlier_mask], np.eye(3)
        )
        if count < self.min_inliers // 2:
            return None
        inliers = int(inlier_mask.sum())
        return RelativePose(rotation, translation.ravel(), False, pose_covariance(inliers, coverage, False))

    def _pnp_pose(self, m, inlier_mask, k_query, k_match, depth_query, coverage):
        """Metric match_T_query from query depth: 3D query points vs 2D match pixels."""
        pts_q, pts_m = m.query_pts[inlier_mask], m.match_pts[inlier_mask]
        u = np.clip(np.rint(pts_q[:, 0]).astype(int), 0, depth_query.shape[1] - 1)
        v = np.clip(np.rint(pts_q[:, 1]).astype(int), 0, depth_query.shape[0] - 1)
        z = depth_query[v, u].astype(np.float64)
        valid = np.isfinite(z) & (z > 0)
        if valid.sum() < max(6, self.min_inliers // 2):
            return None
        rays = _normalise(pts_q[valid], k_query)
        obj = np.column_stack([rays * z[valid, None], z[valid]])
        ok, rvec, tvec, pnp_inliers = cv2.solvePnPRansac(
            obj, pts_m[valid], k_match, None, reprojectionError=self.threshold * 2, confidence=self.confidence
        )
        if not ok or pnp_inliers is None or len(pnp_inliers) < max(6, self.min_inliers // 2):
            return None
        rotation, _ = cv2.Rodrigues(rvec)
        return RelativePose(rotation, tvec.ravel(), True, pose_covariance(len(pnp_inliers), coverage, True))

    def verify(self, query: Keyframe, candidates: list[Candidate]) -> list[Verification]:
        if query.image is None:
            return [Verification(c, 0.0, 0, False, "query keyframe has no image") for c in candidates]
        feats_q = self.store.get(query.id) if query.id in self.store else self.features(query.image)
        results = []
        for cand in candidates:
            feats_m = self.store.get(cand.id)
            if feats_m is None:
                results.append(
                    Verification(cand, 0.0, 0, False, "candidate keyframe not in the feature store")
                )
                continue
            k_match = self._intrinsics.get(cand.id)
            inliers, passed, reason, pose = self.verify_pair(
                feats_q, feats_m, query.image.shape[:2], query.camera_matrix, k_match, query.depth
            )
            results.append(Verification(cand, float(inliers), inliers, passed, reason, pose))
        return sort_verifications(results)
