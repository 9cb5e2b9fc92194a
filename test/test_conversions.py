"""Message conversion: candidates carry their keyframe's camera frame to LoopClosure.match_frame_id."""

import numpy as np
import pytest

pytest.importorskip("rclpy")

from vpr_ros.map.keyframe_map import KeyframeMap  # noqa: E402
from vpr_ros.ros.conversions import (  # noqa: E402
    candidates_from_msg,
    candidates_to_msg,
    verification_from_msg,
    verification_to_msg,
)
from vpr_ros.types import Keyframe, Verification  # noqa: E402


def _unit(seed: int, dim: int = 16) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return x / np.linalg.norm(x)


def test_match_frame_id_travels_from_the_map_to_the_loop_closure():
    kmap = KeyframeMap(16, "Flat", device="cpu")
    kmap.add(_unit(0), 1.0, frame_id="front_camera_optical")
    kmap.add(_unit(1), 2.0, frame_id="rear_camera_optical")
    query = Keyframe(id=7, stamp=9.5, descriptor=_unit(0), frame_id="front_camera_optical")
    candidates = kmap.search(query.descriptor, 2)
    assert {c.frame_id for c in candidates} == {"front_camera_optical", "rear_camera_optical"}

    from std_msgs.msg import Header

    msg = candidates_to_msg(Header(), query, candidates, "mobilenetv2")
    back = candidates_from_msg(msg)
    assert [(c.id, c.frame_id) for c in back] == [(c.id, c.frame_id) for c in candidates]

    best = next(c for c in back if c.id == 0)
    closure = verification_to_msg(query, Verification(best, 42.0, 42, True, "ok"), "mobilenetv2", "geometric")
    assert closure.query_frame_id == "front_camera_optical"
    assert closure.match_frame_id == "front_camera_optical"
    assert verification_from_msg(closure).candidate.frame_id == "front_camera_optical"


def test_candidates_from_an_older_publisher_without_frame_ids():
    from std_msgs.msg import Header

    query = Keyframe(id=3, stamp=1.0, descriptor=_unit(2))
    msg = candidates_to_msg(Header(), query, [], "mobilenetv2")
    msg.candidate_ids, msg.similarities = [1], [0.5]
    msg.candidate_stamps = [msg.header.stamp]
    msg.candidate_frame_ids = []
    assert [c.frame_id for c in candidates_from_msg(msg)] == [""]
