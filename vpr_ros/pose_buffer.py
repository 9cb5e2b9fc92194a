"""A bounded, stamp-sorted pose history with exact integer-nanosecond stamps.

Stamps are ``int`` nanoseconds, never float seconds: a float64 second count near 1.7e9 s
resolves only ~240 ns, so two distinct message stamps could collide or mis-order.

Out-of-order poses are inserted at their sorted place (a late odometry message is still
a valid sample); a duplicate stamp replaces the stored pose. When full, the oldest pose is
dropped; a pose older than everything in a full buffer is dropped at once (counted).
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import matrix_to_quaternion, pose_matrix


def slerp(q0, q1, fraction: float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions (x, y, z, w)."""
    a = np.asarray(q0, dtype=np.float64)
    b = np.asarray(q1, dtype=np.float64)
    dot = float(a @ b)
    if dot < 0.0:  # q and -q are the same rotation: take the short way round
        b, dot = -b, -dot
    if dot > 0.9995:  # nearly equal: sin(theta) ~ 0, normalised lerp is exact enough
        q = a + fraction * (b - a)
        return q / np.linalg.norm(q)
    theta = math.acos(dot)
    s = math.sin(theta)
    return (math.sin((1.0 - fraction) * theta) / s) * a + (math.sin(fraction * theta) / s) * b


class PoseBuffer:
    """History of 4x4 rigid poses keyed by int nanosecond stamps, at most ``capacity`` long.

    Stored as int64 stamps and [N, 7] float64 rows (x, y, z, qx, qy, qz, qw) in arrays twice
    the capacity: appends and drops only move a window, and the window is copied back to the
    start once it reaches the end (amortised O(1)); a late pose shifts only the newer rows.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._stamps = np.zeros(2 * self.capacity, dtype=np.int64)
        self._poses = np.zeros((2 * self.capacity, 7), dtype=np.float64)
        self._start = 0
        self._end = 0
        self.counts = {"added": 0, "late": 0, "replaced": 0, "dropped_oldest": 0, "dropped_too_old": 0}

    def __len__(self) -> int:
        return self._end - self._start

    def _window(self) -> np.ndarray:
        return self._stamps[self._start : self._end]

    def add(self, stamp_ns: int, pose: np.ndarray) -> None:
        """Store ``pose`` (4x4) at ``stamp_ns``; see the module docstring for the policy."""
        stamp_ns = int(stamp_ns)
        m = np.asarray(pose, dtype=np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"pose must be 4x4, got shape {m.shape}")
        row = np.concatenate([m[:3, 3], matrix_to_quaternion(m[:3, :3])])
        stamps = self._window()
        i = int(np.searchsorted(stamps, stamp_ns))
        if i < len(stamps) and int(stamps[i]) == stamp_ns:
            self._poses[self._start + i] = row
            self.counts["replaced"] += 1
            return
        if len(self) == self.capacity and i == 0:
            self.counts["dropped_too_old"] += 1
            return
        if self._end == len(self._stamps):  # window at the end of the arrays: move it back
            n = len(self)
            self._stamps[:n] = self._stamps[self._start : self._end]
            self._poses[:n] = self._poses[self._start : self._end]
            self._start, self._end = 0, n
        at = self._start + i
        if at < self._end:  # late pose: shift the newer rows up by one
            self._stamps[at + 1 : self._end + 1] = self._stamps[at : self._end]
            self._poses[at + 1 : self._end + 1] = self._poses[at : self._end]
            self.counts["late"] += 1
        self._stamps[at] = stamp_ns
        self._poses[at] = row
        self._end += 1
        self.counts["added"] += 1
        if len(self) > self.capacity:
            self._start += 1
            self.counts["dropped_oldest"] += 1

    def _matrix(self, k: int) -> np.ndarray:
        row = self._poses[self._start + k]
        return pose_matrix(row[:3], row[3:])

    def at(self, stamp_ns: int, max_gap_ns: int) -> np.ndarray | None:
        """The pose at ``stamp_ns``: stored exactly, or interpolated (linear translation,
        slerp rotation) between the two neighbours when they are at most ``max_gap_ns``
        apart; None outside the stored span (no extrapolation) or across a larger gap."""
        stamp_ns = int(stamp_ns)
        stamps = self._window()
        i = int(np.searchsorted(stamps, stamp_ns))
        if i < len(stamps) and int(stamps[i]) == stamp_ns:
            return self._matrix(i)
        if i == 0 or i == len(stamps):
            return None
        before, after = int(stamps[i - 1]), int(stamps[i])
        if after - before > max_gap_ns:
            return None
        # Python ints: the fraction is computed from exact nanosecond differences.
        f = (stamp_ns - before) / (after - before)
        a, b = self._poses[self._start + i - 1], self._poses[self._start + i]
        return pose_matrix(a[:3] + f * (b[:3] - a[:3]), slerp(a[3:], b[3:], f))

    def latest(self) -> tuple[int, np.ndarray] | None:
        """(stamp_ns, 4x4) of the newest pose, or None when empty."""
        if not len(self):
            return None
        return int(self._stamps[self._end - 1]), self._matrix(len(self) - 1)

    def span(self) -> tuple[int, int] | None:
        """(oldest, newest) stamp in ns, or None when empty."""
        if not len(self):
            return None
        return int(self._stamps[self._start]), int(self._stamps[self._end - 1])
