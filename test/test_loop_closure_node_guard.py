"""No callback exception may end the loop-closure node; its marker table stays bounded."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is needed for the node tests")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from ros_processes import private_domain_id  # noqa: E402
from vpr_ros.msg import Keyframe as KeyframeMsg  # noqa: E402
from vpr_ros.msg import LoopClosure, LoopClosureArray, MapInfo  # noqa: E402
from vpr_ros.ros import loop_closure_node  # noqa: E402
from vpr_ros.ros.diagnostics import WARN  # noqa: E402
from vpr_ros.ros.guard import callback_errors, guarded  # noqa: E402
from vpr_ros.ros.loop_closure_node import LoopClosureNode  # noqa: E402
from vpr_ros.ros.qos import LATCHED  # noqa: E402


class _Logger:
    def __init__(self):
        self.lines = []

    def error(self, text):
        self.lines.append(text)


class _FakeNode:
    def __init__(self):
        self.counts = Counter()
        self.logger = _Logger()

    def get_logger(self):
        return self.logger


def test_guarded_counts_every_error_and_logs_once_per_period():
    node = _FakeNode()
    calls = []

    def callback(x):
        calls.append(x)
        if x < 0:
            raise ValueError("cannot reshape array of size 3")
        return x * 2

    wrapped = guarded(node, "markers", callback, log_period=60.0)
    assert wrapped(2) == 4
    assert [wrapped(-1) for _ in range(5)] == [None] * 5
    assert node.counts["callback_errors.markers"] == 5
    assert (
        len(node.logger.lines) == 1 and "ValueError: cannot reshape array of size 3" in node.logger.lines[0]
    )
    assert callback_errors(node.counts) == {"callback_errors.markers": 5}

    every = guarded(node, "timer", callback, log_period=0.0)
    every(-1)
    every(-1)
    assert len(node.logger.lines) == 3 and node.counts["callback_errors.timer"] == 2


def test_guarded_lets_keyboard_interrupt_through():
    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        guarded(_FakeNode(), "x", interrupt)()


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=private_domain_id(7))
    yield ctx
    rclpy.try_shutdown(context=ctx)


def _spin_until(executor, condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)  # an escaping callback exception raises here
    return condition()


def _accepted_closure(query_id: int, match_id: int) -> LoopClosureArray:
    closure = LoopClosure(
        status=LoopClosure.ACCEPTED, query_id=query_id, match_id=match_id, reranker="geometric"
    )
    closure.similarity, closure.reranker_score, closure.inliers = 0.9, 50.0, 50
    return LoopClosureArray(query_id=query_id, closures=[closure])


def test_malformed_keyframe_meta_json_is_counted_and_the_node_lives_on(context, tmp_path):
    # Keyframe 1's meta.json holds a 3-element pose: read_payload_pose raised ValueError out
    # of the marker timer and killed the node.
    folder = tmp_path / "keyframes" / f"{1:012d}"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"id": 1, "pose": [1.0, 2.0, 3.0]}))
    node = LoopClosureNode(context=context, parameter_overrides=[Parameter("consistency", value=1)])
    # The senders have the names the node trusts for these topics (ros/trust.py).
    feeder = rclpy.create_node("descriptor_node", context=context)
    verifier = rclpy.create_node("reranker_node", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(feeder)
    executor.add_node(verifier)
    try:
        info_pub = feeder.create_publisher(MapInfo, "vpr/map_info", LATCHED)
        verified_pub = verifier.create_publisher(LoopClosureArray, "vpr/verified", 10)
        keyframe_pub = feeder.create_publisher(KeyframeMsg, "vpr/keyframes", 10)
        info_pub.publish(MapInfo(session="s1", path=str(tmp_path), event="activated"))
        assert _spin_until(executor, lambda: node._map_path == str(tmp_path))
        assert _spin_until(executor, lambda: verified_pub.get_subscription_count() > 0)
        verified_pub.publish(_accepted_closure(5, 1))
        assert _spin_until(executor, lambda: node.counts["loop_closures"] == 1)
        assert _spin_until(executor, lambda: node.counts["bad_map_poses"] == 1)  # the 1 s marker timer

        # Still alive: keyframes keep arriving, markers keep being drawn.
        kf = KeyframeMsg(id=5, has_pose=True)
        kf.pose.position.x = 4.0
        keyframe_pub.publish(kf)
        assert _spin_until(executor, lambda: node._positions.get(5) == (4.0, 0.0, 0.0))
        _, _, values = node._diagnostics()
        assert values["bad_map_poses"] == 1

        # Any other escaping exception is counted as a callback error, not the node's end.
        def broken():
            raise RuntimeError("marker drawing failed")

        node.markers = broken
        node._markers_dirty = True
        assert _spin_until(executor, lambda: node.counts["callback_errors.markers"] == 1)
        level, message, values = node._diagnostics()
        assert level == WARN and values["callback_errors.markers"] == 1 and "callback errors" in message
        assert node._diagnostics()[0] != WARN  # only new errors warn
    finally:
        executor.shutdown()
        feeder.destroy_node()
        verifier.destroy_node()
        node.destroy_node()


def test_keyframe_position_table_is_bounded(context, monkeypatch):
    monkeypatch.setattr(loop_closure_node, "MAX_KEYFRAME_POSITIONS", 100)
    node = LoopClosureNode(context=context)
    try:
        for i in range(250):
            msg = KeyframeMsg(id=i, has_pose=True)
            msg.pose.position.x = float(i)
            node._on_keyframe(msg)
        assert len(node._positions) == 100 and list(node._positions)[0] == 150
        assert node.counts["positions_evicted"] == 150
        assert node._diagnostics()[2]["keyframe_positions_evicted"] == 150
        nan = KeyframeMsg(id=999, has_pose=True)
        nan.pose.position.x = float("nan")
        node._on_keyframe(nan)  # a NaN position is not drawn
        assert 999 not in node._positions
    finally:
        node.destroy_node()
