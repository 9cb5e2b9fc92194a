"""Loop-closure node: thresholds + temporal consistency -> vpr/loop_closures.

Every rejected query is logged in one line with its reason and, with ``publish_rejected``,
published on vpr/rejected, so users can see why no loop was reported at a place. With
odometry poses on the keyframes, vpr/markers (visualization_msgs/MarkerArray) shows the
keyframe positions and the accepted loop edges between them in RViz.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque

from geometry_msgs.msg import Point
from rclpy.node import Node
from visualization_msgs.msg import Marker, MarkerArray

from ..map import read_payload_pose
from ..msg import Keyframe as KeyframeMsg
from ..msg import LoopClosure, LoopClosureArray, MapInfo
from ..pipeline import build_decider
from ..types import LoopStatus
from .conversions import decision_to_msg, stamp_to_ns, verification_from_msg
from .diagnostics import OK, WARN, NodeDiagnostics
from .guard import callback_errors, guarded
from .params import declare_node_parameters, declare_pipeline_parameters, read_pipeline_config
from .qos import LATCHED
from .trust import SenderCheck

PARAMETERS = [
    "reranker",  # verdicts from any other re-ranker are refused
    "min_similarity",
    "min_reranker_score",
    "consistency_mode",
    "consistency",
    "sequence_length",
    "consistency_id_tolerance",
    "consistency_max_query_gap",
    "accept_score",
]
MAX_DECIDED_QUERIES = 10000  # query ids remembered to refuse a verdict sent twice
MAX_MARKER_EDGES = 10000  # newest loop edges drawn
MAX_MARKER_KEYFRAMES = 20000  # newest keyframe positions drawn
# Keyframe positions kept for markers (about 400 B each, so ~8 MB at most); the least recently
# used go first. No more than are drawn: a keyframe flood must not grow the node without bound.
MAX_KEYFRAME_POSITIONS = MAX_MARKER_KEYFRAMES


class LoopClosureNode(Node):
    def __init__(self, **kwargs):
        super().__init__("loop_closure_node", **kwargs)
        declare_pipeline_parameters(self, PARAMETERS)
        declare_node_parameters(self, "loop_closure_node")
        self.config = read_pipeline_config(self, PARAMETERS)
        self.decider = build_decider(self.config)
        self.log_rejected = bool(self.get_parameter("log_rejected").value)
        self.marker_frame = self.get_parameter("marker_frame_id").value
        self.counts: Counter = Counter()
        self._last_diag_errors = 0  # callback errors at the last diagnostics report
        # Verified candidates of recent unconfirmed queries, by query id then match id.
        self._pending: dict[int, dict[int, LoopClosure]] = {}
        # Keyframe positions (from odometry) and accepted loop edges, for markers; a position
        # is None for a saved keyframe without one (so the map is read once per id).
        self._positions: OrderedDict[int, tuple[float, float, float] | None] = OrderedDict()
        self._edges: deque[tuple[int, int]] = deque(maxlen=MAX_MARKER_EDGES)
        self._markers_dirty = False
        self._session: str | None = None
        self._map_path = ""
        self.loop_pub = self.create_publisher(LoopClosure, "vpr/loop_closures", 50)
        self.rejected_pub = self.create_publisher(LoopClosure, "vpr/rejected", 10)
        self.marker_pub = self.create_publisher(MarkerArray, "vpr/markers", 2)
        # One bad message or map file is counted and logged, never the end of the node.
        # Inter-node messages only from the nodes that send them (ros/trust.py).
        self._check_senders = bool(self.get_parameter("check_senders").value)
        descriptor = self.get_parameter("descriptor_node_name").value
        self._senders = {
            "vpr/verified": SenderCheck(self, "vpr/verified", self.get_parameter("reranker_node_name").value),
            "vpr/keyframes": SenderCheck(self, "vpr/keyframes", descriptor),
            "vpr/map_info": SenderCheck(self, "vpr/map_info", descriptor),
        }
        self._decided: OrderedDict[int, None] = OrderedDict()  # recent query ids with a verdict
        self.create_subscription(
            LoopClosureArray, "vpr/verified", guarded(self, "verified", self._on_verified_msg), 50
        )
        self.create_subscription(
            KeyframeMsg, "vpr/keyframes", guarded(self, "keyframes", self._on_keyframe_msg), 50
        )
        self.create_subscription(
            MapInfo, "vpr/map_info", guarded(self, "map_info", self._on_map_info_msg), LATCHED
        )
        self.create_timer(1.0, guarded(self, "markers", self._publish_markers))
        self.diagnostics = NodeDiagnostics(
            self, "loop closure", self._diagnostics, self.get_parameter("diagnostics_period").value
        )

    def _refuse(self, reason: str, detail: str) -> None:
        self.counts[f"refused.{reason}"] += 1
        self.get_logger().warning(f"refused {detail} ({reason})", throttle_duration_sec=10.0)

    def _from_sender(self, topic: str, info) -> bool:
        if not self._check_senders or self._senders[topic].accepts(info):
            return True
        self._refuse("unknown_sender", f"a {topic} message from a publisher that is not its node")
        return False

    # No default for info: rclpy passes MessageInfo only to callbacks that require it.
    def _on_map_info_msg(self, msg: MapInfo, info) -> None:
        if self._from_sender("vpr/map_info", info):
            self._on_map_info(msg)

    def _on_keyframe_msg(self, msg: KeyframeMsg, info) -> None:
        if self._from_sender("vpr/keyframes", info):
            self._on_keyframe(msg)

    def _on_verified_msg(self, msg: LoopClosureArray, info) -> None:
        if not self._from_sender("vpr/verified", info):
            return
        query_id = int(msg.query_id)
        configured = self.config.reranker
        if any(c.reranker != configured for c in msg.closures):
            self._refuse("wrong_reranker", f"verdicts for keyframe {query_id} not from '{configured}'")
            return
        if any(int(c.query_id) != query_id for c in msg.closures):
            self._refuse("inconsistent_ids", f"verdicts naming other queries than keyframe {query_id}")
            return
        if query_id in self._decided:
            self._refuse("duplicate_query", f"a second verdict for keyframe {query_id}")
            return
        self._decided[query_id] = None
        while len(self._decided) > MAX_DECIDED_QUERIES:
            self._decided.popitem(last=False)
        self._on_verified(msg)

    def _on_map_info(self, msg: MapInfo) -> None:
        self._map_path = msg.path
        if self._session is not None and msg.session != self._session:
            # Ids may now name other keyframes: hypotheses and drawn edges no longer hold.
            self.decider.reset()
            self._pending.clear()
            self._positions.clear()
            self._edges.clear()
            self._decided.clear()  # ids are given out again in the new map
            self._markers_dirty = True
            self.counts["map_changes"] += 1
        self._session = msg.session
        self._markers_dirty = True  # edges to saved keyframes can be drawn now

    def _on_keyframe(self, msg: KeyframeMsg) -> None:
        p = msg.pose.position
        if msg.has_pose and all(math.isfinite(v) for v in (p.x, p.y, p.z)):
            self._remember(int(msg.id), (p.x, p.y, p.z))
            self._markers_dirty = True

    def _remember(self, kf_id: int, position) -> None:
        self._positions[kf_id] = position
        self._positions.move_to_end(kf_id)
        while len(self._positions) > MAX_KEYFRAME_POSITIONS:
            self._positions.popitem(last=False)
            self.counts["positions_evicted"] += 1

    def _on_verified(self, msg: LoopClosureArray) -> None:
        verifications = [verification_from_msg(c) for c in msg.closures]
        decision = self.decider.decide(int(msg.query_id), stamp_to_ns(msg.header.stamp), verifications)
        self.counts[decision.status.name] += 1
        template = None
        if decision.best is not None:
            template = next(c for c in msg.closures if c.match_id == decision.best.candidate.id)
        self._publish(decision_to_msg(decision, template, msg.header.frame_id), decision)
        # Earlier keyframes this one confirmed: their stored messages, now accepted.
        for late in decision.confirmed:
            stored = self._pending.pop(late.query_id, {}).get(late.best.candidate.id)
            self._publish(decision_to_msg(late, stored, msg.header.frame_id), late)
        if template is not None and not decision.accepted:
            self._pending[decision.query_id] = {c.match_id: c for c in msg.closures}
        while len(self._pending) > 64:  # only recent queries can still be confirmed
            self._pending.pop(next(iter(self._pending)))

    def _publish(self, out: LoopClosure, decision) -> None:
        if decision.accepted:
            self.counts["loop_closures"] += 1
            self.loop_pub.publish(out)
            self._edges.append((int(out.query_id), int(out.match_id)))
            self._markers_dirty = True
            self.get_logger().info(
                f"loop closure {out.query_id} -> {out.match_id} (similarity {out.similarity:.3f}, "
                f"score {out.reranker_score:.1f}): {decision.reason}"
            )
            return
        if self.log_rejected:
            best = ""
            if decision.best is not None:
                c = decision.best.candidate
                best = f" best match {c.id} (similarity {c.similarity:.3f}, score {decision.best.score:.1f}):"
            self.get_logger().info(
                f"keyframe {decision.query_id} rejected, {decision.status.name}:{best} {decision.reason}"
            )
        if self.get_parameter("publish_rejected").value:
            self.rejected_pub.publish(out)

    # -- markers -----------------------------------------------------------------------------------
    def _position(self, kf_id: int):
        """Position of a keyframe: from vpr/keyframes, else from the saved map (read once)."""
        if kf_id in self._positions:
            self._positions.move_to_end(kf_id)  # edge ends are used on every drawing: keep them
            return self._positions[kf_id]
        if not self._map_path:
            return None  # no map announced (yet): ask again on the next drawing
        try:
            pose = read_payload_pose(self._map_path, kf_id)
            position = None if pose is None else tuple(float(v) for v in pose[:3, 3])
        except Exception as exc:  # a malformed meta.json (e.g. a 3-element pose): no position
            self.counts["bad_map_poses"] += 1
            self.get_logger().warning(f"keyframe {kf_id}: unreadable pose in map {self._map_path}: {exc}")
            position = None
        if position is not None and not all(math.isfinite(v) for v in position):
            position = None
        self._remember(kf_id, position)
        return position

    def markers(self) -> MarkerArray:
        stamp = self.get_clock().now().to_msg()
        keyframes = Marker(ns="keyframes", id=0, type=Marker.SPHERE_LIST, action=Marker.ADD)
        keyframes.scale.x = keyframes.scale.y = keyframes.scale.z = 0.08
        keyframes.color.r, keyframes.color.g, keyframes.color.b, keyframes.color.a = 0.2, 0.4, 1.0, 0.8
        known = [(k, p) for k, p in self._positions.items() if p is not None]
        keyframes.points = [Point(x=p[0], y=p[1], z=p[2]) for _, p in sorted(known)[-MAX_MARKER_KEYFRAMES:]]
        edges = Marker(ns="loop_closures", id=1, type=Marker.LINE_LIST, action=Marker.ADD)
        edges.scale.x = 0.04
        edges.color.r, edges.color.g, edges.color.b, edges.color.a = 0.1, 0.9, 0.2, 1.0
        drawn = 0
        for q, m in self._edges:
            pq, pm = self._position(q), self._position(m)
            if pq is None or pm is None:
                continue
            edges.points.extend([Point(x=pq[0], y=pq[1], z=pq[2]), Point(x=pm[0], y=pm[1], z=pm[2])])
            drawn += 1
        self.counts["edges_drawn"] = drawn
        for marker in (keyframes, edges):
            marker.header.frame_id = self.marker_frame
            marker.header.stamp = stamp
            marker.pose.orientation.w = 1.0
        return MarkerArray(markers=[keyframes, edges])

    def _publish_markers(self) -> None:
        if not self._markers_dirty:
            return
        self._markers_dirty = False
        self.marker_pub.publish(self.markers())

    # -- diagnostics -------------------------------------------------------------------------------
    def _diagnostics(self):
        values = {"decisions": sum(self.counts[s] for s in _STATUS_NAMES)}
        values.update({s.lower(): self.counts[s] for s in _STATUS_NAMES})
        values["loop_closures_published"] = self.counts["loop_closures"]
        values["pending_queries"] = len(self._pending)
        values["keyframes_with_pose"] = sum(p is not None for p in self._positions.values())
        values["loop_edges_drawn"] = self.counts["edges_drawn"]
        values["map_changes"] = self.counts["map_changes"]
        values["keyframe_positions_evicted"] = self.counts["positions_evicted"]
        values["bad_map_poses"] = self.counts["bad_map_poses"]
        values.update(sorted((k, v) for k, v in self.counts.items() if k.startswith("refused.")))
        errors = callback_errors(self.counts)
        values.update(errors)
        total = sum(errors.values())
        new_errors, self._last_diag_errors = total - self._last_diag_errors, total
        if new_errors:
            return WARN, f"{new_errors} callback errors since the last report (see the log)", values
        return OK, f"{self.counts['loop_closures']} loop closures, {values['decisions']} decisions", values


_STATUS_NAMES = tuple(s.name for s in LoopStatus)


def main(args=None) -> None:
    from .spin import run_nodes

    run_nodes([LoopClosureNode], args)


if __name__ == "__main__":
    main()
