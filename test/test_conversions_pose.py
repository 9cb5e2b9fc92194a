"""pose_to_matrix refuses broken odometry instead of inventing an identity rotation."""

import math

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the ROS message types are needed")

from geometry_msgs.msg import Pose  # noqa: E402

from vpr_ros.geometry import is_valid_pose  # noqa: E402
from vpr_ros.msg import LoopClosure  # noqa: E402
from vpr_ros.ros.conversions import pose_to_matrix, verification_from_msg  # noqa: E402


def _pose(position=(1.0, 2.0, 3.0), q=(0.0, 0.0, 0.0, 1.0)) -> Pose:
    p = Pose()
    p.position.x, p.position.y, p.position.z = position
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = q
    return p


@pytest.mark.parametrize(
    "position, q",
    [
        ((1.0, 2.0, 3.0), (0.0, 0.0, 0.0, 0.0)),  # zero quaternion (was: identity rotation)
        ((1.0, 2.0, 3.0), (math.nan, 0.0, 0.0, 1.0)),
        ((1.0, 2.0, 3.0), (0.0, 0.0, 0.0, math.inf)),
        ((math.nan, 2.0, 3.0), (0.0, 0.0, 0.0, 1.0)),
        ((1.0, -math.inf, 3.0), (0.0, 0.0, 0.0, 1.0)),
    ],
)
def test_invalid_odometry_gives_none(position, q):
    assert pose_to_matrix(_pose(position, q)) is None


def test_non_unit_quaternion_is_normalised():
    m = pose_to_matrix(_pose(q=(0.0, 0.0, 0.0, 2.0)))
    assert is_valid_pose(m) and np.allclose(m[:3, :3], np.eye(3)) and np.allclose(m[:3, 3], (1, 2, 3))


def test_verification_with_an_invalid_relative_pose_keeps_the_verification():
    msg = LoopClosure(status=LoopClosure.ACCEPTED, query_id=3, match_id=1, similarity=0.9)
    msg.pose_kind = LoopClosure.POSE_METRIC
    msg.relative_pose = _pose(q=(0.0, 0.0, 0.0, 0.0))
    v = verification_from_msg(msg)
    assert v.passed and v.candidate.id == 1 and v.relative_pose is None
