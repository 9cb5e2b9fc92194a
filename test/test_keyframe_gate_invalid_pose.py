"""NaN or otherwise broken odometry must never become the keyframe gate's reference pose."""

import math

import numpy as np
import pytest

from vpr_ros.geometry import is_valid_pose, pose_matrix
from vpr_ros.keyframe_gate import KeyframeGate


def _pose(x=0.0):
    m = np.eye(4)
    m[0, 3] = x
    return m


def _nan_pose():
    m = _pose()
    m[:3, :3] = np.nan  # what a NaN quaternion gives
    return m


@pytest.mark.parametrize("bad", [_nan_pose(), None])
def test_nan_first_pose_does_not_stop_later_keyframes(bad):
    gate = KeyframeGate(min_period=0.0, min_translation=0.5, min_rotation_deg=10.0)
    first = gate.check(0.0, bad)
    assert first.accept
    # Ten frames one metre apart: all are keyframes (before the fix: 0 of 10).
    decisions = [gate.check(float(t), _pose(float(t))) for t in range(1, 11)]
    assert [d.accept for d in decisions] == [True] * 10


def test_invalid_pose_is_judged_on_time_alone_and_keeps_the_reference():
    gate = KeyframeGate(min_period=1.0, min_translation=1.0)
    assert gate.check(0.0, _pose(0.0)).reason == "first"
    assert gate.check(0.5, _nan_pose()).reason == "too_soon"
    d = gate.check(1.0, _nan_pose())  # no motion test possible: time decides
    assert d.accept and d.reason == "invalid_pose"
    # The reference is still the valid pose at x=0, not the NaN one.
    assert gate.check(2.0, _pose(0.5)).reason == "no_motion"
    assert gate.check(3.0, _pose(1.5)).reason == "accepted"
    assert gate.invalid_poses == 2


def test_first_frame_with_invalid_pose_is_counted_and_not_stored():
    gate = KeyframeGate(min_period=0.0, min_translation=1.0)
    d = gate.check(0.0, _nan_pose())
    assert d.accept and d.reason == "invalid_pose" and gate.invalid_poses == 1
    assert gate._last_pose is None


def test_is_valid_pose():
    assert is_valid_pose(np.eye(4))
    assert is_valid_pose(pose_matrix((1.0, 2.0, 3.0), (0.1, 0.2, 0.3, 0.9)))
    assert is_valid_pose(np.round(pose_matrix((1, 2, 3), (0.1, 0.2, 0.3, 0.9)), 6))  # 6 digits in a file
    scaled = np.eye(4)
    scaled[:3, :3] *= 2.0
    mirror = np.diag([1.0, 1.0, -1.0, 1.0])  # orthonormal but det -1
    bottom = np.eye(4)
    bottom[3, 0] = 0.5
    inf_position = _pose(math.inf)
    for bad in (_nan_pose(), inf_position, scaled, mirror, bottom, np.zeros((4, 4)), np.eye(3), "pose", None):
        assert not is_valid_pose(bad)
