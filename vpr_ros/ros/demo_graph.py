"""The demo's ROS path: the nodes and a sequence player in one process, over DDS.

``play_world`` plays a rendered 3-D world (vpr_ros/world) with everything a robot publishes
(image, CameraInfo with its lens, aligned depth, drifting body odometry, all with the image's
exact stamp) through the descriptor, re-ranker and loop-closure nodes and the GTSAM
pose_graph_node, and returns what came out: loop closures and the optimised path.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from ..geometry import matrix_to_quaternion
from .conversions import pose_to_matrix, stamp_to_ns
from .descriptor_node import DescriptorNode
from .loop_closure_node import LoopClosureNode
from .player import SequencePlayer
from .pose_graph_node import PoseGraphNode
from .reranker_node import RerankerNode

TOPICS = {
    "image_topic": "/demo/image_raw",
    "camera_info_topic": "/demo/camera_info",
    "depth_topic": "/demo/depth",
    "odom_topic": "/demo/odom",
}


@dataclass
class GraphOutput:
    closures: list  # LoopClosure messages, in query order
    frame_of_keyframe: dict[int, int]  # keyframe id -> frame index
    path: dict[int, np.ndarray]  # stamp (ns) -> map_T_base of each pose-graph node
    missing_frames: int


def world_node_parameters(seq, params: dict, depth: bool = True) -> dict:
    """The nodes' parameters for ``seq``: the demo topics and the world's camera extrinsics."""
    m = seq.base_T_camera
    extrinsics = [*(float(v) for v in m[:3, 3]), *matrix_to_quaternion(m[:3, :3])]
    topics = dict(TOPICS, depth_topic=TOPICS["depth_topic"] if depth else "")
    return dict(params, **topics, camera_extrinsics=extrinsics, base_frame="base_link")


def play_world(seq, params: dict, domain_id: int, depth: bool = True) -> GraphOutput:
    node_params = world_node_parameters(seq, params, depth)
    rclpy.init(domain_id=domain_id)
    executor = MultiThreadedExecutor(num_threads=6)
    nodes, spinner = [], None
    try:
        for cls in (DescriptorNode, RerankerNode, LoopClosureNode, PoseGraphNode):
            overrides = [Parameter(k, value=v) for k, v in node_params.items()]
            nodes.append(cls(parameter_overrides=overrides))
        player = SequencePlayer(
            TOPICS["image_topic"],
            TOPICS["camera_info_topic"],
            depth_topic=TOPICS["depth_topic"] if depth else "",
            odom_topic=TOPICS["odom_topic"],
        )
        nodes.append(player)
        for node in nodes:
            executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        player.wait_for_graph()
        missing = player.play(
            seq.images,
            [int(s) for s in seq.stamps_ns],
            seq.camera.K,
            depths=seq.depths if depth else None,
            odometry=seq.odom_body_poses,
            lens=seq.camera.lens,
        )
        if missing:
            print(f"warning: the graph stopped answering; {missing} frames not played", file=sys.stderr)
        if not player.wait_for_decisions(timeout=120):
            print("warning: not every keyframe got a decision in time", file=sys.stderr)
        return collect(player, seq, missing)
    finally:
        executor.shutdown()
        if spinner is not None:
            spinner.join(timeout=5)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()


def collect(player, seq, missing: int = 0, path_timeout: float = 10.0) -> GraphOutput:
    """Closures, keyframe frames and a fresh optimised path, from what the player received."""
    frame_of_stamp = {int(s): i for i, s in enumerate(seq.stamps_ns)}
    path = player.fresh_path(path_timeout)
    with player._lock:
        keyframes = dict(player.keyframes)
        closures = sorted(player.closures, key=lambda m: m.query_id)
    frame_of_keyframe = {kf: frame_of_stamp[s] for kf, s in keyframes.items() if s in frame_of_stamp}
    poses = {}
    if path is not None:
        poses = {stamp_to_ns(p.header.stamp): pose_to_matrix(p.pose) for p in path.poses}
    return GraphOutput(closures, frame_of_keyframe, poses, missing)
