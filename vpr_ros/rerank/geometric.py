"""Classical geometric verification with OpenCV: local features, matching, RANSAC, relative pose.

For each (query, candidate) pair: SIFT (or ORB) keypoints, Lowe ratio test plus a mutual
check, then RANSAC on an essential matrix when both keyframes have intrinsics (a fundamental
matrix otherwise). The score is the RANSAC inlier count. With intrinsics the relative
rotation and translation direction come from the essential matrix (``recoverPose``); when
either keyframe has an aligned depth image, PnP on the inliers gives a metric pose. Every
rejection carries a short reason; nothing here raises on bad input. docs/reranking.md
describes the procedure and the covariance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..feature_store import FeatureStore
from ..types import Candidate, Keyframe, RelativePose, Verification
from .base import RerankerContext, RerankerSpec, param, sort_verifications

# LO-RANSAC with final least-squares polishing (OpenCV >= 4.5). Plain RANSAC returns the
# minimal-sample model: on a rendered scene its translation direction was off by 3-6 degrees
# where USAC_DEFAULT was within 0.1 degree, at the same speed.
ROBUST_METHOD = getattr(cv2, "USAC_DEFAULT", cv2.RANSAC)
# Stored per keyframe; pixel coordinates and depths keep full precision in an fp16 store.
EXACT_FEATURES = ("keypoints", "keypoint_depth")


@dataclass
class MatchResult:
    query_pts: np.ndarray  # [M, 2] pixel coordinates in the query image
    match_pts: np.ndarray  # [M, 2] in the candidate image
    query_idx: np.ndarray  # [M] keypoint indices into the query's features
    match_idx: np.ndarray  # [M] keypoint indices into the candidate's features


def _to_gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _normalise(points: np.ndarray, camera_matrix: np.ndarray) -> np.ndarray:
    """Pixels -> normalised image coordinates (x/z, y/z) with intrinsics ``camera_matrix``."""
    pts = points.reshape(-1, 1, 2).astype(np.float64)
    return cv2.undistortPoints(pts, np.asarray(camera_matrix, np.float64), None).reshape(-1, 2)


def _spread(points: np.ndarray, image_shape: tuple[int, int]) -> tuple[float, float]:
    """(fraction of the image covered by the points' convex hull, smallest/largest principal axis)."""
    if len(points) < 3:
        return 0.0, 0.0
    hull_area = float(cv2.contourArea(cv2.convexHull(points.astype(np.float32))))
    coverage = hull_area / float(image_shape[0] * image_shape[1])
    sv = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return coverage, float(sv[1] / max(sv[0], 1e-9))


def keypoint_depths(keypoints: np.ndarray, depth: np.ndarray | None) -> np.ndarray | None:
    """Depth (metres) at each keypoint's nearest pixel; NaN where the depth image has none."""
    if depth is None or len(keypoints) == 0:
        return None
    depth = np.asarray(depth)
    u = np.clip(np.rint(keypoints[:, 0]).astype(int), 0, depth.shape[1] - 1)
    v = np.clip(np.rint(keypoints[:, 1]).astype(int), 0, depth.shape[0] - 1)
    z = depth[v, u].astype(np.float32)
    z[~np.isfinite(z) | (z <= 0)] = np.nan
    return z


def pose_covariance(
    inliers: int, coverage: float, elongation: float = 1.0, metric: bool = False, scene_depth: float = 2.0
) -> np.ndarray:
    """6x6 covariance over (x, y, z, rx, ry, rz) that grows when inliers are few or poorly spread.

    q = sqrt(50 / inliers) * sqrt(0.25 / coverage) * sqrt(0.5 / elongation), with coverage
    (hull area / image area) floored at 0.01 and elongation (second / first principal axis
    of the inlier pixels) floored at 0.05. Rotation std = 2 deg * q; metric translation std
    = 0.05 * scene_depth * q (5 % of the median inlier depth); a direction-only translation
    gets 1e3 m^2 per axis so that a back end treats its scale as unknown.
    """
    q = (
        np.sqrt(50.0 / max(inliers, 1))
        * np.sqrt(0.25 / max(coverage, 0.01))
        * np.sqrt(0.5 / max(elongation, 0.05))
    )
    rot_var = (np.deg2rad(2.0) * q) ** 2
    trans_var = (0.05 * max(scene_depth, 0.1) * q) ** 2 if metric else 1e3
    return np.diag([trans_var] * 3 + [rot_var] * 3)


def _invert(rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rotation.T, -rotation.T @ translation


@dataclass(frozen=True)
class GeometricParams:
    """Parameters ``geometric_<field>``: the one home of their defaults."""

    feature: str = param("sift", "sift or orb", choices=("sift", "orb"))
    max_features: int = param(1000, "local features per keyframe", range=(1, None))
    ratio: float = param(0.8, "Lowe ratio test threshold", range=(0.0, 1.0))
    min_matches: int = param(
        12, "minimum mutual matches before RANSAC (at least 8 are used)", range=(0, None)
    )
    min_inliers: int = param(20, "minimum RANSAC inliers for a pass", range=(0, None))
    ransac_threshold_px: float = param(
        2.0, "RANSAC threshold in pixels of the verification image", range=(0.0, None)
    )


_DEFAULTS = GeometricParams()


class GeometricVerifier:
    name = "geometric"

    def __init__(
        self,
        feature: str = _DEFAULTS.feature,
        max_features: int = _DEFAULTS.max_features,
        ratio: float = _DEFAULTS.ratio,
        min_matches: int = _DEFAULTS.min_matches,
        min_inliers: int = _DEFAULTS.min_inliers,
        ransac_threshold_px: float = _DEFAULTS.ransac_threshold_px,
        confidence: float = 0.999,
        min_spread: float = 0.05,
        min_elongation: float = 0.05,
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
        self.min_elongation = min_elongation
        self.store = feature_store if feature_store is not None else FeatureStore()
        # Per map keyframe: intrinsics and shape of its stored image (a few bytes each).
        self._intrinsics: dict[int, np.ndarray | None] = {}

    # -- features -------------------------------------------------------------------------
    def features(self, image: np.ndarray, depth: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Keypoints [N,2] float32, descriptors (SIFT stored as uint8: its values are 0..255)
        and, with an aligned depth image, the depth at each keypoint."""
        dim = 128 if self.feature == "sift" else 32
        empty = {"keypoints": np.zeros((0, 2), np.float32), "descriptors": np.zeros((0, dim), np.uint8)}
        if image is None or np.size(image) == 0:
            return empty
        kps, desc = self.detector.detectAndCompute(_to_gray(image), None)
        if desc is None or not kps:
            return empty
        pts = np.array([kp.pt for kp in kps], dtype=np.float32)
        if self.feature == "sift":
            desc = np.clip(np.rint(desc), 0, 255).astype(np.uint8)
        out = {"keypoints": pts, "descriptors": desc}
        z = keypoint_depths(pts, depth)
        if z is not None:
            out["keypoint_depth"] = z
        return out

    def add_keyframe(self, keyframe: Keyframe) -> None:
        if keyframe.image is None:
            return
        self.store.put(keyframe.id, self.features(keyframe.image, keyframe.depth), exact=EXACT_FEATURES)
        self._intrinsics[keyframe.id] = keyframe.camera_matrix

    def reset(self) -> None:
        self.store.clear()
        self._intrinsics.clear()

    # -- matching -------------------------------------------------------------------------
    def match(self, feats_q: dict, feats_m: dict) -> MatchResult:
        dq, dm = np.asarray(feats_q["descriptors"]), np.asarray(feats_m["descriptors"])
        empty = MatchResult(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, int), np.zeros(0, int))
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
        return MatchResult(kq[qi].astype(np.float64), km[mi].astype(np.float64), qi, mi)

    # -- verification ---------------------------------------------------------------------
    def verify_pair(
        self,
        feats_q: dict,
        feats_m: dict,
        query_shape: tuple[int, int],
        k_query: np.ndarray | None = None,
        k_match: np.ndarray | None = None,
    ) -> tuple[int, bool, str, RelativePose | None]:
        """(inliers, passed, reason, relative pose match_T_query) for one image pair.

        ``feats_*`` are ``features()`` dicts; their optional ``keypoint_depth`` enables PnP.
        """
        m = self.match(feats_q, feats_m)
        n = len(m.query_pts)
        if n < self.min_matches:
            return 0, False, f"too few matches ({n} < {self.min_matches})", None
        use_essential = k_query is not None and k_match is not None
        pq = pm = None
        if use_essential:
            pq, pm = _normalise(m.query_pts, k_query), _normalise(m.match_pts, k_match)
            focal = float(np.mean([k_query[0, 0], k_query[1, 1], k_match[0, 0], k_match[1, 1]]))
            model, mask = cv2.findEssentialMat(
                pq, pm, np.eye(3), ROBUST_METHOD, self.confidence, self.threshold / focal
            )
        else:
            model, mask = cv2.findFundamentalMat(
                m.query_pts, m.match_pts, ROBUST_METHOD, self.threshold, self.confidence
            )
        # OpenCV may return several stacked 3x3 solutions or a mask that does not fit the input.
        if model is None or mask is None or model.shape != (3, 3) or mask.size != n:
            return 0, False, "RANSAC found no single consistent model", None
        inlier_mask = mask.ravel().astype(bool)
        inliers = int(inlier_mask.sum())
        if inliers < self.min_inliers:
            return inliers, False, f"too few inliers ({inliers} < {self.min_inliers})", None
        coverage, elongation = _spread(m.query_pts[inlier_mask], query_shape)
        if elongation < self.min_elongation:
            return inliers, False, "degenerate: inliers are nearly collinear", None
        if coverage < self.min_spread:
            reason = f"inliers cover {coverage:.1%} of the image (< {self.min_spread:.0%})"
            return inliers, False, reason, None
        pose = None
        if use_essential:
            spread = (coverage, elongation)
            pose = self._pnp_pose(m, inlier_mask, feats_q, feats_m, k_query, k_match, spread)
            if pose is None:
                pose = self._essential_pose(model, pq, pm, inlier_mask, spread)
        kind = "essential" if use_essential else "fundamental"
        pose_text = "" if pose is None else (", metric pose" if pose.metric else ", pose up to scale")
        return inliers, True, f"{inliers} {kind} inliers of {n} matches{pose_text}", pose

    def _essential_pose(self, essential, pq, pm, inlier_mask, spread) -> RelativePose | None:
        # recoverPose(E, p1, p2) gives x2 = R x1 + t, i.e. match_T_query for p1 = query.
        count, rotation, translation, _ = cv2.recoverPose(
            essential, pq[inlier_mask], pm[inlier_mask], np.eye(3)
        )
        if count < max(5, self.min_inliers // 2):  # too few points in front of both cameras
            return None
        inliers = int(inlier_mask.sum())
        cov = pose_covariance(inliers, *spread, metric=False)
        return RelativePose(rotation, translation.ravel(), False, cov)

    def _pnp_pose(self, m, inlier_mask, feats_q, feats_m, k_query, k_match, spread) -> RelativePose | None:
        """Metric match_T_query from depth: query depth first, else the candidate's (inverted)."""
        for side in ("query", "match"):
            feats = feats_q if side == "query" else feats_m
            depth = feats.get("keypoint_depth")
            if depth is None:
                continue
            depth = np.asarray(depth, np.float64)
            if side == "query":
                idx, pts3_px, k3, pts2, k2 = m.query_idx, m.query_pts, k_query, m.match_pts, k_match
            else:
                idx, pts3_px, k3, pts2, k2 = m.match_idx, m.match_pts, k_match, m.query_pts, k_query
            z = depth[idx[inlier_mask]]
            valid = np.isfinite(z) & (z > 0)
            needed = max(6, self.min_inliers // 2)
            if valid.sum() < needed:
                continue
            rays = _normalise(pts3_px[inlier_mask][valid], k3)
            obj = np.column_stack([rays * z[valid, None], z[valid]])
            ok, rvec, tvec, pnp_inliers = cv2.solvePnPRansac(
                obj,
                pts2[inlier_mask][valid],
                np.asarray(k2, np.float64),
                None,
                reprojectionError=self.threshold * 2,
                confidence=self.confidence,
            )
            if not ok or pnp_inliers is None or len(pnp_inliers) < needed:
                continue
            rotation, _ = cv2.Rodrigues(rvec)
            translation = tvec.ravel()
            if side == "match":  # PnP gave query_T_match
                rotation, translation = _invert(rotation, translation)
            scene_depth = float(np.median(z[valid][pnp_inliers.ravel()]))
            cov = pose_covariance(len(pnp_inliers), *spread, metric=True, scene_depth=scene_depth)
            return RelativePose(rotation, translation, True, cov)
        return None

    def verify(self, query: Keyframe, candidates: list[Candidate]) -> list[Verification]:
        if query.image is None:
            return [Verification(c, 0.0, 0, False, "query keyframe has no image") for c in candidates]
        feats_q = self.store.get(query.id)
        if feats_q is None:
            feats_q = self.features(query.image, query.depth)
        results = []
        for cand in candidates:
            feats_m = self.store.get(cand.id)
            if feats_m is None:
                results.append(
                    Verification(cand, 0.0, 0, False, "candidate keyframe not in the feature store")
                )
                continue
            k_match = self._intrinsics.get(cand.id)
            try:
                inliers, passed, reason, pose = self.verify_pair(
                    feats_q, feats_m, query.image.shape[:2], query.camera_matrix, k_match
                )
            except cv2.error as exc:  # a pathological input must not stop the node
                inliers, passed, reason, pose = 0, False, f"OpenCV error: {str(exc).strip()[:120]}", None
            results.append(Verification(cand, float(inliers), inliers, passed, reason, pose))
        return sort_verifications(results)


def _build(params: GeometricParams, context: RerankerContext) -> GeometricVerifier:
    return GeometricVerifier(**asdict(params), feature_store=context.feature_store)


SPEC = RerankerSpec(
    name="geometric",
    params=GeometricParams,
    build=_build,
    description="SIFT/ORB matches + RANSAC on the keyframe images (any model)",
)
