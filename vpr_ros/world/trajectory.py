"""Ground-truth motion around the corridor ring, the camera mount, and drifting odometry.

Frames (REP-103 / REP-105): the world has z up; the body (base_link) has x forward, y left,
z up and stays on the floor (z = 0, yaw only). The camera's optical frame has z forward,
x right, y down. Every pose is a 4x4 matrix ``parent_T_child``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Optical axes in base_link: x_opt = -y_base, y_opt = -z_base, z_opt = x_base (columns).
BASE_R_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def yaw_pose(x: float, y: float, yaw: float) -> np.ndarray:
    pose = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    pose[:2, :2] = [[c, -s], [s, c]]
    pose[:2, 3] = x, y
    return pose


def base_T_camera(translation=(0.2, 0.0, 1.2), pitch_deg: float = 0.0) -> np.ndarray:
    """Camera optical frame in base_link; positive pitch tilts the view down (as REP-103 pitch)."""
    a = math.radians(pitch_deg)
    # Rotation about y_base by +pitch turns x_base (the view) towards -z_base.
    pitch = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    pose = np.eye(4)
    pose[:3, :3] = pitch @ BASE_R_OPTICAL
    pose[:3, 3] = translation
    return pose


@dataclass(frozen=True)
class Ring:
    """The corridor's centreline: a rectangle with rounded corners, walked counter-clockwise
    from the middle of its south side (heading +x)."""

    half_x: float = 10.8
    half_y: float = 5.8
    corner_radius: float = 1.0

    def _segments(self) -> list[tuple[str, float]]:
        r = self.corner_radius
        sx, sy = self.half_x - r, self.half_y - r
        arc = ("arc", math.pi * r / 2)
        return [
            ("line", sx),
            arc,
            ("line", 2 * sy),
            arc,
            ("line", 2 * sx),
            arc,
            ("line", 2 * sy),
            arc,
            ("line", sx),
        ]

    @property
    def length(self) -> float:
        return sum(length for _, length in self._segments())

    def at(self, s: float) -> tuple[float, float, float, float]:
        """(x, y, heading, curvature) at arc length ``s`` (taken modulo the length)."""
        s = s % self.length
        x, y, h = 0.0, -self.half_y, 0.0
        r = self.corner_radius
        for kind, length in self._segments():
            d = min(s, length)
            if kind == "line":
                x, y = x + d * math.cos(h), y + d * math.sin(h)
            else:  # a left turn about the centre r to the left
                cx, cy = x - r * math.sin(h), y + r * math.cos(h)
                h += d / r
                x, y = cx + r * math.sin(h), cy - r * math.cos(h)
            if s <= length:
                return x, y, h, (1.0 / r if kind == "arc" else 0.0)
            s -= length
        return x, y, h, 0.0


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def ring_trajectory(
    ring: Ring,
    laps: float = 2.0,
    step_m: float = 0.7,
    seed: int = 7,
    lane_offset_m: tuple[float, float] = (0.1, 0.28),
    lateral_wobble_m: float = 0.06,
    yaw_wobble_deg: float = 2.5,
    blend_m: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(world_T_base [N, 4, 4], distance along the centreline [N]) one frame every ``step_m``.

    Each lap keeps its own side of the corridor (a lane offset of alternating sign, drawn in
    ``lane_offset_m``, so revisits are 0.2-0.56 m apart), blended over ``blend_m`` where laps
    meet, plus a slow lateral and yaw wobble whose periods do not divide the lap length:
    revisits never repeat a pose.
    """
    rng = np.random.default_rng(seed)
    n_laps = int(math.ceil(laps)) + 1
    lanes = np.array([(-1) ** k * rng.uniform(*lane_offset_m) for k in range(n_laps)])
    phases = rng.uniform(0, 2 * math.pi, 2)
    periods = (9.3, 6.1)  # metres; not divisors of the lap length
    length = ring.length
    s = np.arange(int(math.floor(laps * length / step_m)) + 1) * step_m

    def offset(s):
        # Lane of lap 0, then each lap's change of lane, eased in over blend_m around its start.
        lane = np.full_like(s, lanes[0])
        for k in range(1, n_laps):
            lane += (lanes[k] - lanes[k - 1]) * _smoothstep((s - k * length) / blend_m + 0.5)
        return lane + lateral_wobble_m * np.sin(2 * math.pi * s / periods[0] + phases[0])

    poses = []
    for si in s:
        x, y, h, kappa = ring.at(si)
        o = float(offset(np.array([si]))[0])
        do = float((offset(np.array([si + 1e-4])) - offset(np.array([si - 1e-4])))[0] / 2e-4)
        # The offset path's tangent: T (1 - kappa o) + o' N, with N the left normal.
        heading = h + math.atan2(do, 1.0 - kappa * o)
        heading += math.radians(yaw_wobble_deg) * math.sin(2 * math.pi * si / periods[1] + phases[1])
        poses.append(yaw_pose(x - o * math.sin(h), y + o * math.cos(h), heading))
    return np.array(poses), s


@dataclass(frozen=True)
class OdometryDrift:
    """Wheel-odometry errors, applied to each ground-truth body increment of length d:
    translation scaled by (1 + scale_error) plus N(0, (translation_noise d)^2) per axis,
    heading turned by yaw_bias_deg_per_m d plus N(0, yaw_noise_deg^2 d). The defaults drift
    ~2.5 m RMS (up to ~5 m) over the two default laps while staying smooth frame to frame."""

    yaw_bias_deg_per_m: float = 0.2
    scale_error: float = 0.03
    translation_noise: float = 0.01
    yaw_noise_deg: float = 0.1
    seed: int = 0

    @staticmethod
    def none() -> OdometryDrift:
        return OdometryDrift(0.0, 0.0, 0.0, 0.0)


def integrate_odometry(gt_poses: np.ndarray, drift: OdometryDrift) -> np.ndarray:
    """odom_T_base [N, 4, 4]: the ground-truth increments with ``drift`` applied, composed from
    the first ground-truth pose (so odometry and ground truth start together)."""
    gt_poses = np.asarray(gt_poses, np.float64)
    rng = np.random.default_rng(drift.seed)
    odom = [gt_poses[0].copy()]
    for prev, cur in zip(gt_poses[:-1], gt_poses[1:], strict=True):
        step = np.linalg.inv(prev) @ cur
        d = float(np.linalg.norm(step[:3, 3]))
        noisy = step.copy()
        noisy[:2, 3] = step[:2, 3] * (1.0 + drift.scale_error) + rng.normal(0.0, 1.0, 2) * (
            drift.translation_noise * d
        )
        turn = math.radians(drift.yaw_bias_deg_per_m * d + rng.normal() * drift.yaw_noise_deg * math.sqrt(d))
        noisy = noisy @ yaw_pose(0.0, 0.0, turn)
        odom.append(odom[-1] @ noisy)
    return np.array(odom)
