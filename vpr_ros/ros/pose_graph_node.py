"""Reference back end: odometry + vpr/loop_closures -> GTSAM iSAM2 -> optimised path.

The graph (backends/pose_graph.py) makes a node from the odometry every ``node_min_*``; an
accepted loop closure's body-frame constraint (``base_relative_pose``) joins the nodes at
its two stamps (exact stamps hit their node; others are moved to the nearest node through
the odometry between) with a robust kernel, so one wrong closure cannot bend the map. A
rotation-only constraint constrains rotation only; a closure without a body-frame
constraint (no camera extrinsics) is counted and skipped.

Publishes vpr/optimized_path (nav_msgs/Path in ``map_frame``) and vpr/map_to_odom (the
correction as geometry_msgs/TransformStamped ``map_frame`` -> ``odom_frame``; also sent to
tf2 when tf2_ros is installed).
"""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Odometry, Path
from rclpy.node import Node

from ..backends.pose_graph import PoseGraph, PoseGraphParams
from ..msg import LoopClosure
from .conversions import matrix_to_pose, ns_to_stamp, pose_to_matrix, stamp_to_ns
from .diagnostics import OK, WARN, NodeDiagnostics
from .guard import callback_errors, guarded
from .params import declare_node_parameters

NODE = "pose_graph_node"
# PoseGraphParams fields that are node parameters of the same name (node_parameters.py).
GRAPH_PARAMETERS = (
    "node_min_translation",
    "node_min_rotation_deg",
    "node_max_period_s",
    "odom_translation_sigma_per_m",
    "odom_rotation_sigma_deg_per_m",
    "loop_kernel",
    "loop_kernel_param",
    "rotation_only_translation_sigma",
)
MAX_WAITING_LOOPS = 100
# Odometry queued while an iSAM2 update holds the graph: 5 s at 200 Hz. A shallower queue
# drops poses on a busy CPU and loops near the hole are skipped as odometry gaps.
ODOM_QUEUE_DEPTH = 1000
POSE_KINDS = {LoopClosure.POSE_METRIC: "metric", LoopClosure.POSE_ROTATION_ONLY: "rotation_only"}


class PoseGraphNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE, **kwargs)
        declare_node_parameters(self, NODE)
        value = lambda name: self.get_parameter(name).value  # noqa: E731
        odom_topic = value("odom_topic")
        if not odom_topic:
            raise ValueError("pose_graph_node needs odom_topic (nav_msgs/Odometry of the robot body)")
        self.graph = PoseGraph(PoseGraphParams(**{name: value(name) for name in GRAPH_PARAMETERS}))
        self.map_frame, self.odom_frame = value("map_frame"), value("odom_frame")
        self.base_frame = value("base_frame")
        self.counts: Counter = Counter()
        self._lock = threading.Lock()  # odometry and loop callbacks may run on two threads
        self._last_errors = 0
        self._latest_stamp = None
        self._waiting: list[LoopClosure] = []  # closures newer than the odometry so far
        self.path_pub = self.create_publisher(Path, "vpr/optimized_path", 2)
        self.correction_pub = self.create_publisher(TransformStamped, "vpr/map_to_odom", 10)
        self._tf = _tf_broadcaster(self)
        self.create_subscription(Odometry, odom_topic, guarded(self, "odom", self._on_odom), ODOM_QUEUE_DEPTH)
        self.create_subscription(
            LoopClosure, value("loop_closure_topic"), guarded(self, "loop", self._on_loop), 100
        )
        self.create_timer(float(value("path_period")), guarded(self, "path", self._publish_path))
        self.diagnostics = NodeDiagnostics(self, "pose graph", self._diagnostics, value("diagnostics_period"))

    def _on_odom(self, msg: Odometry) -> None:
        pose = pose_to_matrix(msg.pose.pose)
        if pose is None:
            self.counts["bad_odometry"] += 1
            return
        if msg.child_frame_id and msg.child_frame_id != self.base_frame:
            self.counts["odometry_of_another_frame"] += 1  # still used: one body, named twice
        stamp_ns = stamp_to_ns(msg.header.stamp)
        with self._lock:
            self.graph.add_odometry(stamp_ns, pose)
            self._latest_stamp = msg.header.stamp
            waiting = [m for m in self._waiting if stamp_to_ns(m.query_stamp) <= stamp_ns]
            for m in waiting:
                self._waiting.remove(m)
        for m in waiting:  # their odometry has arrived now
            self._add_loop(m)

    def _on_loop(self, msg: LoopClosure) -> None:
        if msg.status != LoopClosure.ACCEPTED:
            self.counts["loop_not_accepted"] += 1
            return
        kind = POSE_KINDS.get(msg.base_pose_kind)
        if kind is None:
            self.counts["loop_without_body_constraint"] += 1
            return
        if msg.base_frame_id and msg.base_frame_id != self.base_frame:
            self.counts["loop_of_another_body_frame"] += 1
            return
        if pose_to_matrix(msg.base_relative_pose) is None or not np.all(np.isfinite(msg.base_covariance)):
            self.counts["loop_invalid"] += 1
            return
        self._add_loop(msg)

    def _add_loop(self, msg: LoopClosure) -> None:
        kind = POSE_KINDS[msg.base_pose_kind]
        constraint = pose_to_matrix(msg.base_relative_pose)
        covariance = np.asarray(msg.base_covariance, np.float64).reshape(6, 6)
        with self._lock:
            result = self.graph.add_loop(
                stamp_to_ns(msg.query_stamp), stamp_to_ns(msg.match_stamp), constraint, covariance, kind
            )
            if result.reason == "query_after_odometry" and len(self._waiting) < MAX_WAITING_LOOPS:
                # Odometry lags the closure (another callback, another process): retried when
                # the odometry at its stamp arrives.
                self._waiting.append(msg)
                self.counts["loop_waiting_for_odometry"] += 1
                return
        if result.added:
            self.counts["loops_added"] += 1
            self.get_logger().info(
                f"loop {msg.query_id} -> {msg.match_id} ({kind}) added between nodes "
                f"{result.match_node} and {result.query_node}"
            )
        else:
            self.counts[f"loop_skipped.{result.reason}"] += 1

    def _publish_path(self) -> None:
        with self._lock:
            if self._latest_stamp is None:
                return
            poses = self.graph.optimized_poses()
            correction = self.graph.map_T_odom()
            stamp = self._latest_stamp
        path = Path()
        path.header.stamp, path.header.frame_id = stamp, self.map_frame
        for stamp_ns, pose in poses:
            p = PoseStamped()
            p.header.stamp, p.header.frame_id = ns_to_stamp(stamp_ns), self.map_frame
            p.pose = matrix_to_pose(pose[:3, :3], pose[:3, 3])
            path.poses.append(p)
        self.path_pub.publish(path)
        t = TransformStamped()
        t.header.stamp, t.header.frame_id, t.child_frame_id = stamp, self.map_frame, self.odom_frame
        q = matrix_to_pose(correction[:3, :3], correction[:3, 3])
        t.transform.translation.x, t.transform.translation.y = q.position.x, q.position.y
        t.transform.translation.z = q.position.z
        t.transform.rotation = q.orientation
        self.correction_pub.publish(t)
        if self._tf is not None:
            self._tf.sendTransform(t)

    def _diagnostics(self):
        with self._lock:
            values = dict(self.graph.diagnostics())
        values.update(sorted(self.counts.items()))
        errors = callback_errors(self.counts)
        values.update(errors)
        total = sum(errors.values())
        new, self._last_errors = total - self._last_errors, total
        if new:
            return WARN, f"{new} callback errors since the last report (see the log)", values
        return OK, f"{values.get('nodes', 0)} nodes, {self.counts['loops_added']} loops", values


def _tf_broadcaster(node):
    try:
        from tf2_ros import TransformBroadcaster  # noqa: PLC0415 - not on PyPI; on a ROS install
    except ImportError:
        return None
    return TransformBroadcaster(node)


def main(args=None) -> None:
    from .spin import run_nodes

    run_nodes([PoseGraphNode], args)


if __name__ == "__main__":
    main()
