"""PoseBuffer: exact int-nanosecond lookup, interpolation, no extrapolation, bounded size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vpr_ros.geometry import pose_matrix
from vpr_ros.pose_buffer import PoseBuffer, slerp

T0 = 1_700_000_000_123_456_789  # ~1.7e18 ns: float seconds resolve only ~240 ns here


def _yaw_pose(x: float, yaw: float, z: float = 0.0) -> np.ndarray:
    return pose_matrix((x, 0.5 * x, z), (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)))


def _angle(rotation: np.ndarray) -> float:
    return math.acos(max(-1.0, min(1.0, (np.trace(rotation) - 1) / 2)))


def test_stored_stamps_return_the_stored_pose():
    buf = PoseBuffer(10)
    poses = [_yaw_pose(i, 0.3 * i, z=-i) for i in range(5)]
    for i, p in enumerate(poses):
        buf.add(T0 + i * 1000, p)
    for i, p in enumerate(poses):
        got = buf.at(T0 + i * 1000, max_gap_ns=1)
        assert np.array_equal(got[:3, 3], p[:3, 3])  # translation bit-exact
        assert np.allclose(got, p, atol=1e-14, rtol=0)
    assert len(buf) == 5 and buf.span() == (T0, T0 + 4000)
    stamp, latest = buf.latest()
    assert stamp == T0 + 4000 and np.allclose(latest, poses[-1], atol=1e-14)


def test_midpoint_halves_translation_and_rotation_angle():
    buf = PoseBuffer(4)
    a = _yaw_pose(0.0, 0.0)
    b = pose_matrix((2.0, -4.0, 6.0), (math.sin(0.6), 0.0, 0.0, math.cos(0.6)))  # 1.2 rad about x
    buf.add(T0, a)
    buf.add(T0 + 100_000_000, b)
    mid = buf.at(T0 + 50_000_000, max_gap_ns=100_000_000)
    assert np.allclose(mid[:3, 3], (1.0, -2.0, 3.0))
    assert _angle(mid[:3, :3]) == pytest.approx(0.6, abs=1e-12)
    assert _angle(mid[:3, :3].T @ b[:3, :3]) == pytest.approx(0.6, abs=1e-12)
    quarter = buf.at(T0 + 25_000_000, max_gap_ns=100_000_000)
    assert _angle(quarter[:3, :3]) == pytest.approx(0.3, abs=1e-12)


def test_slerp_takes_the_short_way_for_negated_quaternions():
    q0 = np.array([0.0, 0.0, 0.0, 1.0])
    q1 = -np.array([0.0, 0.0, math.sin(0.5), math.cos(0.5)])  # 1 rad about z, negated
    q = slerp(q0, q1, 0.5)
    assert abs(2 * math.acos(abs(q[3]))) == pytest.approx(0.5, abs=1e-12)


def test_gap_and_out_of_range_give_none():
    buf = PoseBuffer(8)
    buf.add(T0, _yaw_pose(0, 0))
    buf.add(T0 + 10, _yaw_pose(1, 0))
    buf.add(T0 + 1_000_000_010, _yaw_pose(2, 0))  # 1 s later
    assert buf.at(T0 + 5, max_gap_ns=10) is not None
    assert buf.at(T0 + 5, max_gap_ns=9) is None  # neighbours 10 ns apart > 9
    assert buf.at(T0 + 500_000_000, max_gap_ns=100_000_000) is None  # across the 1 s gap
    assert buf.at(T0 - 1, max_gap_ns=10**12) is None  # before the oldest: no extrapolation
    assert buf.at(T0 + 1_000_000_011, max_gap_ns=10**12) is None  # after the newest
    assert PoseBuffer(3).at(T0, 10) is None and PoseBuffer(3).latest() is None
    assert PoseBuffer(3).span() is None


def test_capacity_drops_the_oldest_and_rejects_older_than_all():
    buf = PoseBuffer(5)
    for i in range(23):  # several trips round the doubled arrays
        buf.add(T0 + i, _yaw_pose(i, 0))
    assert len(buf) == 5 and buf.span() == (T0 + 18, T0 + 22)
    assert buf.counts["dropped_oldest"] == 18
    assert buf.at(T0 + 17, 10) is None and buf.at(T0 + 18, 10)[0, 3] == 18
    buf.add(T0 + 3, _yaw_pose(3, 0))  # older than everything in a full buffer
    assert buf.counts["dropped_too_old"] == 1 and buf.span() == (T0 + 18, T0 + 22)


def test_late_insertion_is_sorted_and_duplicate_stamp_replaces():
    buf = PoseBuffer(6)
    for i in (0, 2, 4, 6):
        buf.add(T0 + i, _yaw_pose(i, 0))
    buf.add(T0 + 3, _yaw_pose(3, 0))  # late
    buf.add(T0 + 1, _yaw_pose(1, 0))  # late
    assert buf.counts["late"] == 2 and len(buf) == 6
    for i in (0, 1, 2, 3, 4, 6):
        assert buf.at(T0 + i, 0)[0, 3] == i
    buf.add(T0 + 4, _yaw_pose(40, 0))  # same stamp: replaces, no growth
    assert buf.counts["replaced"] == 1 and len(buf) == 6 and buf.at(T0 + 4, 0)[0, 3] == 40
    buf.add(T0 + 5, _yaw_pose(5, 0))  # late into a full buffer: the oldest goes
    assert buf.span() == (T0 + 1, T0 + 6) and buf.at(T0 + 5, 0)[0, 3] == 5


def test_nanosecond_stamps_where_float_seconds_collide():
    # 1 ns apart at 1.7e18 ns: identical as float seconds, distinct here.
    assert (T0 / 1e9) == ((T0 + 1) / 1e9)
    buf = PoseBuffer(4)
    buf.add(T0, _yaw_pose(0.0, 0.0))
    buf.add(T0 + 1, _yaw_pose(1.0, 0.0))
    buf.add(T0 + 3, _yaw_pose(4.0, 0.0))
    assert len(buf) == 3
    assert buf.at(T0 + 1, 0)[0, 3] == 1.0
    assert buf.at(T0 + 2, max_gap_ns=2)[0, 3] == pytest.approx(2.5, abs=1e-12)
    assert buf.span() == (T0, T0 + 3) and isinstance(buf.span()[0], int)


def test_rejects_a_non_4x4_pose():
    with pytest.raises(ValueError):
        PoseBuffer(2).add(T0, np.eye(3))
    with pytest.raises(ValueError):
        PoseBuffer(0)
