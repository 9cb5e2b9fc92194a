"""Loop-closure constraints as back ends use them: between the two keyframes' body frames.

Verification measures ``match_cam_T_query_cam`` between the two cameras' optical frames.
Back ends (RTAB-Map, GTSAM, Kimera-PGMO, LIO-SAM, Swarm-SLAM) keep nodes of the robot body
(REP-105 ``base_link``), so the constraint is moved through the camera extrinsics
``base_T_camera`` of each keyframe:

    match_base_T_query_base = base_T_cam(match) @ match_cam_T_query_cam @ inv(base_T_cam(query))

Covariances are over (x, y, z, rot_x, rot_y, rot_z) in ROS order, perturbations on the right
(``T exp(xi)``, GTSAM's convention with the blocks swapped); right perturbations of the
camera constraint become right perturbations of the body constraint through the adjoint of
the query's extrinsics. A rotation-only constraint keeps its rotation; its translation is
unknown at any scale, so the body translation is zero with the large variance kept.
"""

from __future__ import annotations

import numpy as np

from .geometry import adjoint, invert_pose, is_valid_pose
from .types import RelativePose


def body_constraint(
    camera_pose: RelativePose, base_T_cam_match: np.ndarray | None, base_T_cam_query: np.ndarray | None
) -> RelativePose | None:
    """The constraint between the body frames; None when either keyframe's extrinsics are unknown."""
    if base_T_cam_match is None or base_T_cam_query is None:
        return None
    if not (is_valid_pose(base_T_cam_match) and is_valid_pose(base_T_cam_query)):
        return None
    body = np.asarray(base_T_cam_match) @ camera_pose.matrix() @ invert_pose(base_T_cam_query)
    ad = adjoint(base_T_cam_query)
    covariance = ad @ np.asarray(camera_pose.covariance, np.float64) @ ad.T
    translation = body[:3, 3] if camera_pose.metric else np.zeros(3)
    return RelativePose(body[:3, :3], translation, camera_pose.metric, covariance)


def inverse_constraint(pose: RelativePose) -> RelativePose:
    """query_T_match from match_T_query, its right-perturbation covariance moved through the
    adjoint of the original (inv(T exp(xi)) = inv(T) exp(-Ad(T) xi))."""
    t = pose.matrix()
    inverse = invert_pose(t)
    ad = adjoint(t)
    covariance = ad @ np.asarray(pose.covariance, np.float64) @ ad.T
    return RelativePose(
        inverse[:3, :3], inverse[:3, 3] if pose.metric else np.zeros(3), pose.metric, covariance
    )


def covariance_ros_to_gtsam(cov) -> np.ndarray:
    """6x6 covariance (x, y, z, rx, ry, rz) -> GTSAM Pose3 tangent order (rx, ry, rz, x, y, z)."""
    c = np.asarray(cov, dtype=np.float64).reshape(6, 6)
    order = [3, 4, 5, 0, 1, 2]
    return c[np.ix_(order, order)]


def clamped_eigen(cov, min_variance: float, max_variance: float) -> tuple[np.ndarray, np.ndarray]:
    c = np.array(cov, dtype=np.float64)
    # A non-finite variance means "unknown": the largest variance; other non-finite terms 0.
    unknown = np.flatnonzero(~np.isfinite(np.diag(c)))
    c[~np.isfinite(c)] = 0.0
    c[unknown, unknown] = max_variance
    w, v = np.linalg.eigh(0.5 * (c + c.T))
    return np.clip(w, min_variance, max_variance), v


def information_matrix(cov, min_variance: float = 1e-9, max_variance: float = 1e12) -> np.ndarray:
    """Inverse of a covariance (what RTAB-Map's Link takes), always finite and symmetric:
    eigenvalues are clamped to [min_variance, max_variance], so a singular covariance gives a
    large but finite information and a huge or infinite variance one near zero."""
    w, v = clamped_eigen(cov, min_variance, max_variance)
    return (v / w) @ v.T
