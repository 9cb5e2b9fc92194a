"""Small rigid-body and camera helpers shared by the core, the nodes and the tools.

Quaternions are (x, y, z, w) as in ROS messages and TUM files; poses are 4x4 matrices.
"""

from __future__ import annotations

import math

import numpy as np


def quaternion_to_matrix(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """Quaternion (normalised here) -> 3x3 rotation matrix; ValueError for a zero or non-finite one."""
    n = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    if not math.isfinite(n) or n == 0.0:
        raise ValueError(f"not a rotation quaternion: ({qx}, {qy}, {qz}, {qw})")
    x, y, z, w = qx / n, qy / n, qz / n, qw / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """3x3 rotation -> (qx, qy, qz, qw) with qw >= 0."""
    r = np.asarray(rotation, dtype=np.float64)
    # Work from the largest of the four squared components to avoid dividing by ~0.
    squares = np.array(
        [
            1 + r[0, 0] - r[1, 1] - r[2, 2],
            1 - r[0, 0] + r[1, 1] - r[2, 2],
            1 - r[0, 0] - r[1, 1] + r[2, 2],
            1 + r[0, 0] + r[1, 1] + r[2, 2],
        ]
    )
    k = int(np.argmax(squares))
    s = 0.5 / math.sqrt(squares[k])
    if k == 0:
        q = (0.25 / s, (r[0, 1] + r[1, 0]) * s, (r[0, 2] + r[2, 0]) * s, (r[2, 1] - r[1, 2]) * s)
    elif k == 1:
        q = ((r[0, 1] + r[1, 0]) * s, 0.25 / s, (r[1, 2] + r[2, 1]) * s, (r[0, 2] - r[2, 0]) * s)
    elif k == 2:
        q = ((r[0, 2] + r[2, 0]) * s, (r[1, 2] + r[2, 1]) * s, 0.25 / s, (r[1, 0] - r[0, 1]) * s)
    else:
        q = ((r[2, 1] - r[1, 2]) * s, (r[0, 2] - r[2, 0]) * s, (r[1, 0] - r[0, 1]) * s, 0.25 / s)
    sign = -1.0 if q[3] < 0 else 1.0
    return tuple(float(sign * v) for v in q)


def pose_matrix(translation, quaternion) -> np.ndarray:
    """4x4 pose from (x, y, z) and (qx, qy, qz, qw)."""
    m = np.eye(4)
    m[:3, :3] = quaternion_to_matrix(*quaternion)
    m[:3, 3] = translation
    return m


def scale_camera_matrix(camera_matrix: np.ndarray | None, scale: float) -> np.ndarray | None:
    """Intrinsics of the same camera after resizing its image by ``scale`` (fx, fy, cx, cy, skew)."""
    if camera_matrix is None:
        return None
    k = np.asarray(camera_matrix, dtype=np.float64)
    return k if scale == 1.0 else np.diag([scale, scale, 1.0]) @ k


def camera_matrix_for_width(
    camera_matrix: np.ndarray | None, calibrated_width: int | None, width: int
) -> np.ndarray | None:
    """Intrinsics calibrated at ``calibrated_width`` used on an image ``width`` pixels wide
    (a CameraInfo for another resolution than the image stream)."""
    if camera_matrix is None or not calibrated_width or calibrated_width == width:
        return camera_matrix
    return scale_camera_matrix(camera_matrix, width / calibrated_width)


def is_valid_pose(matrix, tol: float = 1e-3) -> bool:
    """True for a finite 4x4 rigid transform: rotation orthonormal with det +1 and bottom row
    (0, 0, 0, 1), each within ``tol`` (loose enough for poses stored with 6 digits)."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        return False
    r = m[:3, :3]
    return bool(
        np.allclose(r.T @ r, np.eye(3), rtol=0.0, atol=tol)
        and abs(np.linalg.det(r) - 1.0) <= tol
        and np.allclose(m[3], (0.0, 0.0, 0.0, 1.0), rtol=0.0, atol=tol)
    )


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform."""
    m = np.asarray(pose, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


def adjoint(pose: np.ndarray) -> np.ndarray:
    """6x6 adjoint of a 4x4 rigid transform for twists ordered (v, w) as in ROS covariances:
    X exp(xi) X^-1 = exp(adjoint(X) xi), i.e. (R v + [t]x R w, R w)."""
    m = np.asarray(pose, dtype=np.float64)
    r, t = m[:3, :3], m[:3, 3]
    skew = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    out = np.zeros((6, 6))
    out[:3, :3] = r
    out[:3, 3:] = skew @ r
    out[3:, 3:] = r
    return out


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Angle of a 3x3 rotation in degrees (0..180)."""
    cos = (np.trace(np.asarray(rotation, dtype=np.float64)) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two 3-vectors in degrees (nan when either is zero)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return math.degrees(math.acos(min(1.0, max(-1.0, float(np.dot(a, b)) / (na * nb)))))
