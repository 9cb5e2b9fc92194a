"""Parameters that only the ROS nodes read (topics, QoS, persistence, lifecycle, diagnostics).

The pipeline's own parameters live in ``config.PipelineConfig`` (and each re-ranker's in its
registry row); this is the one table for the rest. The nodes declare these rows (same names,
defaults, descriptions and numeric ranges), the launch file takes its argument defaults and
descriptions from them, replay forwards the rows marked ``replay``, and the README tables are
generated from both tables (``python -m vpr_ros.apps.parameter_docs``). Offline tools accept
and ignore these names, so one params file serves the robot and ``evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .backends.params import KERNELS, PoseGraphParams

DESCRIPTOR, RERANKER, LOOP_CLOSURE = "descriptor_node", "reranker_node", "loop_closure_node"
POSE_GRAPH = "pose_graph_node"  # the reference back end (ros/pose_graph_node.py)
ADAPTER = "backend_adapter_node"  # loop closures for LIO-SAM / RTAB-Map (ros/backend_adapter_node.py)
ALL_NODES = (DESCRIPTOR, RERANKER, LOOP_CLOSURE, POSE_GRAPH, ADAPTER)
_GRAPH = PoseGraphParams()  # the pose graph's defaults have their home there


@dataclass(frozen=True)
class NodeParameter:
    name: str
    default: Any
    description: str
    nodes: tuple[str, ...]
    range: tuple[float, float] | None = None  # inclusive; declared as a ROS integer/float range
    replay: bool = True  # forwarded from a params file to the nodes a replay starts


def _row(name, default, description, nodes, range=None, replay=True) -> NodeParameter:
    return NodeParameter(name, default, description, tuple(nodes), range, replay)


NODE_PARAMETERS: dict[str, NodeParameter] = {
    p.name: p
    for p in [
        # camera input (descriptor node)
        _row(
            "image_topic", "/camera/image_raw", "camera image topic (Image, or CompressedImage)", [DESCRIPTOR]
        ),
        _row("compressed", False, "subscribe to sensor_msgs/CompressedImage instead of Image", [DESCRIPTOR]),
        _row(
            "camera_info_topic",
            "",
            "sensor_msgs/CameraInfo topic ('' = none: no relative poses)",
            [DESCRIPTOR],
        ),
        _row(
            "depth_topic",
            "",
            "aligned depth image topic, 16UC1 mm or 32FC1 m ('' = none: poses up to scale)",
            [DESCRIPTOR],
            replay=False,
        ),
        _row(
            "odom_topic",
            "",
            "nav_msgs/Odometry of the body: keyframe gate and poses; the pose graph's input ('' = none)",
            [DESCRIPTOR, POSE_GRAPH],
            replay=False,
        ),
        _row(
            "odom_max_gap",
            0.25,
            "seconds between the two odometry messages a keyframe pose is interpolated between",
            [DESCRIPTOR],
            range=(0.001, 60.0),
        ),
        # frames (REP-105): loop closures between the body frames, through the camera extrinsics
        _row(
            "base_frame",
            "base_link",
            "robot body frame: loop closures also carry the constraint between two body poses",
            [DESCRIPTOR, POSE_GRAPH],
        ),
        _row(
            "camera_extrinsics",
            [],
            "camera optical frame in base_frame: x y z qx qy qz qw ([] = from tf2 if installed)",
            [DESCRIPTOR],
        ),
        _row("image_reliability", "reliable", "image QoS reliability: reliable or best_effort", [DESCRIPTOR]),
        _row("camera_name", "", "camera name stored with each keyframe ('' = the node name)", [DESCRIPTOR]),
        # persistence (descriptor node); a replay never loads or overwrites the user's map
        _row(
            "map_path",
            "",
            "directory of the saved map ('' = keep the map in memory only)",
            [DESCRIPTOR],
            replay=False,
        ),
        _row(
            "map_save_period",
            60.0,
            "seconds between automatic saves of a changed map (0 = off)",
            [DESCRIPTOR],
            range=(0.0, 86400.0),
            replay=False,
        ),
        # lifecycle
        _row(
            "autostart",
            True,
            "configure and activate at start-up (false: wait for a lifecycle manager)",
            [DESCRIPTOR, RERANKER],
            replay=False,
        ),
        # outputs
        _row(
            "publish_debug_image",
            False,
            "publish vpr/debug_image: query and best match with the inliers drawn",
            [RERANKER],
        ),
        _row(
            "publish_rejected",
            True,
            "publish every keyframe without a loop closure on vpr/rejected, with its reason",
            [LOOP_CLOSURE],
            replay=False,
        ),
        _row("log_rejected", True, "log one line per rejected query (info)", [LOOP_CLOSURE]),
        _row("marker_frame_id", "odom", "frame of the odometry poses, for vpr/markers", [LOOP_CLOSURE]),
        # who may send the inter-node messages (ros/trust.py; SROS2 for real authentication)
        _row(
            "check_senders",
            True,
            "accept vpr/map_info, vpr/candidates, vpr/verified only from the expected node",
            [RERANKER, LOOP_CLOSURE],
        ),
        _row(
            "descriptor_node_name",
            "descriptor_node",
            "name of the node that sends vpr/map_info, vpr/candidates and vpr/keyframes",
            [RERANKER, LOOP_CLOSURE],
        ),
        _row(
            "reranker_node_name", "reranker_node", "name of the node that sends vpr/verified", [LOOP_CLOSURE]
        ),
        # reference back end (pose_graph_node): GTSAM iSAM2 over odometry + loop closures
        _row(
            "map_frame", "map", "frame of the optimised path and of the map -> odom correction", [POSE_GRAPH]
        ),
        _row(
            "odom_frame", "odom", "frame of the odometry (child of the map -> odom correction)", [POSE_GRAPH]
        ),
        _row(
            "loop_closure_topic",
            "vpr/loop_closures",
            "LoopClosure topic a back end (pose graph, adapter) takes",
            [POSE_GRAPH, ADAPTER],
        ),
        _row("path_period", 1.0, "seconds between vpr/optimized_path messages", [POSE_GRAPH], (0.01, 3600.0)),
        _row(
            "node_min_translation",
            _GRAPH.node_min_translation,
            "a new graph node when the body moved this far (m)",
            [POSE_GRAPH],
            (0.0, 1000.0),
        ),
        _row(
            "node_min_rotation_deg",
            _GRAPH.node_min_rotation_deg,
            "... or turned this much (deg)",
            [POSE_GRAPH],
            (0.0, 360.0),
        ),
        _row(
            "node_max_period_s",
            _GRAPH.node_max_period_s,
            "... or this long passed (s)",
            [POSE_GRAPH],
            (0.0, 3600.0),
        ),
        _row(
            "odom_translation_sigma_per_m",
            _GRAPH.odom_translation_sigma_per_m,
            "odometry translation sigma per metre travelled (m/m)",
            [POSE_GRAPH],
            (0.0, 10.0),
        ),
        _row(
            "odom_rotation_sigma_deg_per_m",
            _GRAPH.odom_rotation_sigma_deg_per_m,
            "odometry rotation sigma per metre travelled (deg/m)",
            [POSE_GRAPH],
            (0.0, 360.0),
        ),
        _row(
            "loop_kernel",
            _GRAPH.loop_kernel,
            "robust kernel on loop factors: " + ", ".join(KERNELS),
            [POSE_GRAPH],
        ),
        _row(
            "loop_kernel_param",
            _GRAPH.loop_kernel_param,
            "kernel width in sigmas of the loop residual",
            [POSE_GRAPH],
            (1e-6, 1e6),
        ),
        _row(
            "rotation_only_translation_sigma",
            _GRAPH.rotation_only_translation_sigma,
            "translation sigma (m) of a rotation-only loop: leaves translation free",
            [POSE_GRAPH],
            (1e-3, 1e9),
        ),
        # back-end adapters
        _row("backend", "liosam", "adapter: liosam or rtabmap (docs/backends.md)", [ADAPTER]),
        _row(
            "stamp_tolerance",
            1e-6,
            "seconds between a loop stamp and the back end's node stamp (RTAB-Map keeps float seconds)",
            [ADAPTER],
            (0.0, 10.0),
        ),
        _row(
            "diagnostics_period", 1.0, "seconds between /diagnostics reports", ALL_NODES, range=(0.01, 3600.0)
        ),
    ]
}

# Names every ROS node accepts that rclpy declares itself.
ROS_BUILTIN_PARAMETERS = frozenset({"use_sim_time"})


def node_only_parameter_names() -> frozenset[str]:
    """Names the offline tools accept in a params file and ignore."""
    return frozenset(NODE_PARAMETERS) | ROS_BUILTIN_PARAMETERS


def parameters_of(node: str) -> list[NodeParameter]:
    """The node-only parameters ``node`` (e.g. ``descriptor_node``) declares."""
    if node not in ALL_NODES:
        raise KeyError(f"unknown node '{node}'; known: {', '.join(ALL_NODES)}")
    return [p for p in NODE_PARAMETERS.values() if node in p.nodes]
