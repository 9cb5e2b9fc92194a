"""Decides which camera frames become keyframes (time and, optionally, motion), and tracks
the run of near-identical keyframes a camera without odometry is in (stationary or slow)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import is_valid_pose


@dataclass
class GateDecision:
    accept: bool
    reason: str  # "first", "accepted", "too_soon", "no_motion", "time_jump", "invalid_pose"


class KeyframeGate:
    """Accepts a frame when enough time has passed and, with odometry, the camera moved.

    ``min_period`` is in seconds of message time (header stamps), so replaying a bag faster
    than real time keeps the same keyframes. With a pose, a frame must also be at least
    ``min_translation`` metres or ``min_rotation_deg`` degrees away from the last keyframe
    (either suffices); a zero disables that test. Stamps that jump backwards (a bag restarted
    in a loop) reset the gate instead of blocking it forever.

    A pose that is not a finite rigid transform (NaN odometry, a zero quaternion, a scaled
    matrix) counts as no pose: it is never kept as the reference (one NaN reference would make
    every later motion test fail), the frame is judged on time alone, and an accepted frame
    gets the reason "invalid_pose" instead of "first"/"accepted"/"time_jump". ``invalid_poses``
    counts all of them, accepted or not.

    Stationary runs (``stationary_similarity``): a keyframe whose descriptor is at least that
    similar to the previous keyframe's continues the previous one's run, any other starts a
    run. Without odometry that is the only sign that the camera has hardly moved; the
    pipeline never offers the query's own run as loop candidates, however long it lasts.
    Measured with mobilenetv2 on the rendered corridor and real images: the keyframes of a
    stopped camera are at least 0.99 alike, a crawl of 10 cm per keyframe at least 0.96 (but
    at a corner), walking (0.5-0.7 m per keyframe) mostly below 0.95. A run can only hold the
    current traversal: a revisit needs a turn or a walk in between, which ends the run (a run
    of walking keyframes lasts a few keyframes, well inside the other windows). 1 turns runs
    off.
    """

    def __init__(
        self,
        min_period: float = 0.5,
        min_translation: float = 0.0,
        min_rotation_deg: float = 0.0,
        stationary_similarity: float = 1.0,
    ):
        if min_period < 0 or min_translation < 0 or min_rotation_deg < 0:
            raise ValueError("keyframe gate thresholds must be >= 0")
        self.min_period = min_period
        self.min_translation = min_translation
        self.min_rotation = np.deg2rad(min_rotation_deg)
        self.stationary_similarity = stationary_similarity
        self._last_stamp: float | None = None
        self._last_pose: np.ndarray | None = None
        self._last_descriptor: np.ndarray | None = None
        self._run_start: int | None = None
        self.invalid_poses = 0

    @property
    def uses_motion(self) -> bool:
        return self.min_translation > 0 or self.min_rotation > 0

    def check(self, stamp: float, pose: np.ndarray | None = None) -> GateDecision:
        """Decide for a frame; the gate's state only moves on when the frame is accepted."""
        invalid = pose is not None and not is_valid_pose(pose)
        if invalid:
            self.invalid_poses += 1
            pose = None
        if self._last_stamp is None:
            return self._accept(stamp, pose, "invalid_pose" if invalid else "first")
        dt = stamp - self._last_stamp
        if dt < 0:
            return self._accept(stamp, pose, "invalid_pose" if invalid else "time_jump")
        if dt < self.min_period:
            return GateDecision(False, "too_soon")
        if self.uses_motion and pose is not None and self._last_pose is not None and not self._moved(pose):
            return GateDecision(False, "no_motion")
        return self._accept(stamp, pose, "invalid_pose" if invalid else "accepted")

    def _moved(self, pose: np.ndarray) -> bool:
        delta = np.linalg.inv(self._last_pose) @ pose
        translation = float(np.linalg.norm(delta[:3, 3]))
        cos_angle = np.clip((np.trace(delta[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
        rotation = float(np.arccos(cos_angle))
        return (self.min_translation > 0 and translation >= self.min_translation) or (
            self.min_rotation > 0 and rotation >= self.min_rotation
        )

    def _accept(self, stamp: float, pose: np.ndarray | None, reason: str) -> GateDecision:
        self._last_stamp = stamp
        if pose is not None:
            self._last_pose = np.asarray(pose, dtype=np.float64)
        return GateDecision(True, reason)

    def stationary_run(self, descriptor: np.ndarray) -> int | None:
        """The first keyframe id of the run a keyframe with ``descriptor`` would continue;
        None when it would start a new one (or runs are off)."""
        if self.stationary_similarity >= 1.0 or self._last_descriptor is None:
            return None
        similarity = float(np.dot(self._last_descriptor, np.asarray(descriptor, np.float32).ravel()))
        return self._run_start if similarity >= self.stationary_similarity else None

    def keyframe_added(self, kf_id: int, descriptor: np.ndarray, run_start: int | None) -> None:
        """The keyframe that joined the map, with what ``stationary_run`` said about it."""
        self._last_descriptor = np.asarray(descriptor, np.float32).ravel().copy()
        self._run_start = kf_id if run_start is None else run_start

    def reset(self) -> None:
        self._last_stamp = None
        self._last_pose = None
        self._last_descriptor = None
        self._run_start = None
