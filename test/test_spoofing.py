"""Forged inter-node messages are refused and counted: a MapInfo from a stranger does not
clear state, a stranger's or another re-ranker's ACCEPTED verdict is never published, a verdict
sent twice is published once, and a keyframe id sent again with another image is refused."""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is needed for the node tests")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from ros_processes import private_domain_id  # noqa: E402
from vpr_ros.msg import LoopCandidates, LoopClosure, LoopClosureArray, MapInfo  # noqa: E402
from vpr_ros.ros.conversions import keyframe_to_msg  # noqa: E402
from vpr_ros.ros.loop_closure_node import LoopClosureNode  # noqa: E402
from vpr_ros.ros.qos import LATCHED  # noqa: E402
from vpr_ros.ros.reranker_node import RerankerNode  # noqa: E402
from vpr_ros.types import Keyframe  # noqa: E402


@pytest.fixture
def graph():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=private_domain_id(5))
    executor = SingleThreadedExecutor(context=ctx)
    nodes = []

    def add(node):
        nodes.append(node)
        executor.add_node(node)
        return node

    yield ctx, executor, add
    executor.shutdown()
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown(context=ctx)


def _spin_until(executor, condition, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return condition()


def _spin_for(executor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)


def _verdict(query_id: int, match_id: int, reranker: str = "geometric") -> LoopClosureArray:
    c = LoopClosure(status=LoopClosure.ACCEPTED, query_id=query_id, match_id=match_id, reranker=reranker)
    c.similarity, c.reranker_score, c.inliers = 0.9, 80.0, 80
    return LoopClosureArray(query_id=query_id, closures=[c])


def test_loop_closure_node_takes_map_info_and_verdicts_only_from_its_nodes(graph):
    ctx, executor, add = graph
    node = add(LoopClosureNode(context=ctx, parameter_overrides=[Parameter("consistency", value=1)]))
    intruder = add(rclpy.create_node("intruder", context=ctx))
    descriptor = add(rclpy.create_node("descriptor_node", context=ctx))
    reranker = add(rclpy.create_node("reranker_node", context=ctx))
    published = []
    listener = add(rclpy.create_node("listener", context=ctx))
    listener.create_subscription(LoopClosure, "vpr/loop_closures", published.append, 10)

    real_info = descriptor.create_publisher(MapInfo, "vpr/map_info", LATCHED)
    real_info.publish(MapInfo(session="real", event="activated"))
    assert _spin_until(executor, lambda: node._session == "real")

    forged_info = intruder.create_publisher(MapInfo, "vpr/map_info", LATCHED)
    forged_info.publish(MapInfo(session="forged", event="reset"))
    assert _spin_until(executor, lambda: node.counts["refused.unknown_sender"] >= 1)
    assert node._session == "real" and node.counts["map_changes"] == 0

    forged = intruder.create_publisher(LoopClosureArray, "vpr/verified", 10)
    real = reranker.create_publisher(LoopClosureArray, "vpr/verified", 10)
    assert _spin_until(executor, lambda: real.get_subscription_count() and forged.get_subscription_count())
    forged.publish(_verdict(50, 3))
    assert _spin_until(executor, lambda: node.counts["refused.unknown_sender"] >= 2)
    real.publish(_verdict(51, 3, reranker="pairvpr"))  # the node runs 'geometric'
    assert _spin_until(executor, lambda: node.counts["refused.wrong_reranker"] == 1)
    real.publish(_verdict(52, 4))
    assert _spin_until(executor, lambda: len(published) == 1)
    real.publish(_verdict(52, 4))  # the same verdict again (a replay)
    assert _spin_until(executor, lambda: node.counts["refused.duplicate_query"] == 1)
    _spin_for(executor, 0.5)
    assert [(m.query_id, m.match_id) for m in published] == [(52, 4)]
    _, _, values = node._diagnostics()
    assert values["refused.duplicate_query"] == 1 and values["refused.wrong_reranker"] == 1


def test_reranker_refuses_strangers_and_reused_keyframe_ids(graph):
    ctx, executor, add = graph
    node = add(RerankerNode(context=ctx, parameter_overrides=[Parameter("reranker", value="none")]))
    descriptor = add(rclpy.create_node("descriptor_node", context=ctx))
    intruder = add(rclpy.create_node("intruder", context=ctx))
    verdicts = []
    listener = add(rclpy.create_node("listener", context=ctx))
    listener.create_subscription(LoopClosureArray, "vpr/verified", verdicts.append, 10)
    real = descriptor.create_publisher(LoopCandidates, "vpr/candidates", 10)
    forged = intruder.create_publisher(LoopCandidates, "vpr/candidates", 10)
    assert _spin_until(executor, lambda: real.get_subscription_count() and forged.get_subscription_count())

    def candidates(kf_id: int, seed: int) -> LoopCandidates:
        image = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        kf = Keyframe(id=kf_id, stamp=float(kf_id), descriptor=np.ones(4, np.float32) / 2, image=image)
        return LoopCandidates(query=keyframe_to_msg(kf, "mobilenetv2"))

    forged.publish(candidates(1, 0))
    assert _spin_until(executor, lambda: node.counts["refused.unknown_sender"] == 1)
    real.publish(candidates(1, 0))
    assert _spin_until(executor, lambda: len(verdicts) == 1)
    real.publish(candidates(1, 1))  # id 1 again, another image
    assert _spin_until(executor, lambda: node.counts["refused.reused_keyframe_id"] == 1)
    _spin_for(executor, 0.3)
    assert len(verdicts) == 1 and node.counts["queries"] == 1
