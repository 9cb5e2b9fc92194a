"""The demo's ROS path: the three nodes and a sequence player in one process, over DDS."""

from __future__ import annotations

import sys
import threading

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from .descriptor_node import DescriptorNode
from .loop_closure_node import LoopClosureNode
from .player import SequencePlayer
from .reranker_node import RerankerNode


def play_through_graph(seq, params: dict, domain_id: int) -> list[tuple[int, int, float, float]]:
    """Play ``seq`` (a DemoSequence) through the nodes; (query frame, match frame, similarity,
    re-ranker score) of every published loop closure, in query order."""
    topic, info_topic = "/demo/image_raw", "/demo/camera_info"
    node_params = dict(params, image_topic=topic, camera_info_topic=info_topic)
    rclpy.init(domain_id=domain_id)
    executor = MultiThreadedExecutor(num_threads=4)
    nodes, spinner = [], None
    try:
        for cls in (DescriptorNode, RerankerNode, LoopClosureNode):
            overrides = [Parameter(k, value=v) for k, v in node_params.items()]
            nodes.append(cls(parameter_overrides=overrides))
        player = SequencePlayer(topic, info_topic)
        nodes.append(player)
        for node in nodes:
            executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        player.wait_for_graph()
        missing = player.play(seq.images, seq.stamps, seq.camera_matrix)
        if missing:
            print(f"warning: the graph stopped answering; {missing} frames not played", file=sys.stderr)
        if not player.wait_for_decisions(timeout=120):
            print("warning: not every keyframe got a decision in time", file=sys.stderr)
        period = seq.stamps[1] - seq.stamps[0]
        frame_of_keyframe = {kf: int(round(ns * 1e-9 / period)) for kf, ns in player.keyframes.items()}
        return [
            (frame_of_keyframe[m.query_id], frame_of_keyframe[m.match_id], m.similarity, m.reranker_score)
            for m in sorted(player.closures, key=lambda m: m.query_id)
        ]
    finally:
        executor.shutdown()
        if spinner is not None:
            spinner.join(timeout=5)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
