"""Two-view geometry for geometric verification: cameras with lenses, inlier spread, planar
scenes, keypoint depths, triangulation and the relative-pose covariance."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..lens import RECTIFIED, Lens
from ..types import Keyframe


@dataclass(frozen=True)
class Camera:
    """Intrinsics of a keyframe's verification image and its lens distortion."""

    matrix: np.ndarray  # 3x3
    lens: Lens = RECTIFIED

    def normalise(self, points: np.ndarray) -> np.ndarray:
        """Pixels -> ideal pinhole coordinates (x/z, y/z): the lens distortion removed."""
        return self.lens.undistort(points, self.matrix)

    @property
    def focal(self) -> float:
        return float(self.matrix[0, 0] + self.matrix[1, 1]) / 2.0


def keyframe_camera(keyframe: Keyframe) -> Camera | None:
    if keyframe.camera_matrix is None:
        return None
    return Camera(np.asarray(keyframe.camera_matrix, np.float64), keyframe.lens)


def spread_of(points: np.ndarray, image_shape: tuple[int, int]) -> tuple[float, float]:
    """(fraction of the image covered by the points' convex hull, smallest/largest principal axis)."""
    if len(points) < 3:
        return 0.0, 0.0
    hull_area = float(cv2.contourArea(cv2.convexHull(points.astype(np.float32))))
    coverage = hull_area / float(image_shape[0] * image_shape[1])
    sv = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return coverage, float(sv[1] / max(sv[0], 1e-9))


# A homography that explains this share of the essential-matrix inliers means a planar scene.
PLANAR_INLIER_RATIO = 0.9
# The homography's gate for XFeat, in multiples of the epipolar one: its transfer error is 2-D
# and carries both points' noise. At 1x the pixel-quantised XFeat keypoints of one wall fitted
# at 0.75 only (an 11 deg wrong pose got through); at 2.5x views of one wall fit at >= 0.94.
# SIFT keeps 1x: at 2.5x more SIFT views counted as planar, which skips the PnP / essential
# cross-check, and a 10.8 deg PnP pose reached the integration test on the 3-D world.
XFEAT_PLANAR_FACTOR = 2.5


def is_planar(pq: np.ndarray, pm: np.ndarray, threshold: float, factor: float = 1.0) -> bool:
    """True when one homography fits nearly all inliers (normalised coordinates; ``threshold``
    is the epipolar inlier threshold, ``factor`` widens it for the homography)."""
    if len(pq) < 8:
        return False
    h, mask = cv2.findHomography(pq, pm, cv2.RANSAC, factor * threshold)
    return h is not None and mask is not None and mask.sum() >= PLANAR_INLIER_RATIO * len(pq)


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


def invert_rt(rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rotation.T, -rotation.T @ translation


def triangulate(rays_q: np.ndarray, rays_p: np.ndarray, p_T_q: np.ndarray, tol: float):
    """Points seen at normalised coordinates ``rays_q`` (query camera) and ``rays_p`` (a
    partner camera at ``p_T_q``): (points [N, 3] in the query frame, good [N] bool), good =
    finite, in front of both cameras, reprojecting within ``tol`` (normalised units) in both,
    with at least 1 degree of parallax."""
    proj_q = np.hstack([np.eye(3), np.zeros((3, 1))])
    homog = cv2.triangulatePoints(proj_q, p_T_q[:3, :], rays_q.T, rays_p.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        pts_q = (homog[:3] / homog[3]).T
        pts_p = pts_q @ p_T_q[:3, :3].T + p_T_q[:3, 3]
        err_q = np.linalg.norm(pts_q[:, :2] / pts_q[:, 2:] - rays_q, axis=1)
        err_p = np.linalg.norm(pts_p[:, :2] / pts_p[:, 2:] - rays_p, axis=1)
        centre_p = -p_T_q[:3, :3].T @ p_T_q[:3, 3]  # partner camera centre, query frame
        ray_a = pts_q / np.linalg.norm(pts_q, axis=1, keepdims=True)
        ray_b = (pts_q - centre_p) / np.linalg.norm(pts_q - centre_p, axis=1, keepdims=True)
        parallax = np.degrees(np.arccos(np.clip(np.sum(ray_a * ray_b, axis=1), -1.0, 1.0)))
    good = (
        np.all(np.isfinite(pts_q), axis=1)
        & (pts_q[:, 2] > 0)
        & (pts_p[:, 2] > 0)
        & (err_q < tol)
        & (err_p < tol)
        & (parallax >= 1.0)
    )
    return pts_q, good
