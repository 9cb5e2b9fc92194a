"""Loop closures in the form other SLAM back ends take: one thin node, ``backend:=<name>``.

Adapters are registered in ``ADAPTERS`` (name -> class), like models and re-rankers. Each
takes accepted vpr/loop_closures and respects ``base_pose_kind``:

- ``liosam``: LIO-SAM's external loop topic ``lio_loop/loop_closure_detection``
  (std_msgs/Float64MultiArray ``[t_cur, t_prev]``, seconds, best effort, depth 1). LIO-SAM
  finds its keyframes nearest those times and verifies the loop with its own ICP, so the
  pose is not sent (any pose_kind works; a closure is sent once).
- ``rtabmap``: rtabmap_msgs/Link through RTAB-Map's ``rtabmap/add_link`` service: from_id =
  the query's node, to_id = the match's, ``transform`` = the body-frame constraint from the
  query to the match (inverted from ours: RTAB-Map's transform is ``to`` in ``from``),
  ``information`` = the inverse covariance, type 4 (kUserClosure). RTAB-Map numbers its own
  nodes: their stamps come from ``rtabmap/mapData`` (rtabmap_msgs/MapData), matched within
  ``stamp_tolerance`` (RTAB-Map keeps stamps as float seconds). A rotation-only closure gets
  translation information 1e-3 (1e3 m^2 variance); a closure without a body-frame constraint
  is skipped (RTAB-Map would read a zero transform as a pose).
  rtabmap_msgs has no PyPI wheel: it is imported when the adapter starts.

docs/backends.md has the recipes for Kimera-PGMO / Kimera-Multi (pose_graph_tools) and
Swarm-SLAM.
"""

from __future__ import annotations

import importlib
from collections import Counter, OrderedDict

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray

from ..constraints import information_matrix, inverse_constraint
from ..geometry import matrix_to_quaternion
from ..msg import LoopClosure
from ..types import RelativePose
from .conversions import pose_from_fields, stamp_to_ns, stamp_to_sec
from .diagnostics import OK, NodeDiagnostics
from .guard import guarded
from .params import declare_node_parameters

RTABMAP_USER_CLOSURE = 4  # rtabmap::Link::kUserClosure
MAX_RTABMAP_NODES = 200_000  # node id <-> stamp pairs remembered (16 B each)


def body_pose_of(msg: LoopClosure) -> RelativePose | None:
    """The message's body-frame constraint (match_T_query), or None."""
    return pose_from_fields(msg.base_pose_kind, msg.base_relative_pose, msg.base_covariance)


class LioSamAdapter:
    def __init__(self, node):
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.pub = node.create_publisher(Float64MultiArray, "lio_loop/loop_closure_detection", qos)

    def send(self, msg: LoopClosure) -> str:
        self.pub.publish(Float64MultiArray(data=liosam_pair(msg)))
        return "sent"


def liosam_pair(msg: LoopClosure) -> list[float]:
    """[t_cur, t_prev]: the query's and the match's stamps in seconds."""
    return [stamp_to_sec(msg.query_stamp), stamp_to_sec(msg.match_stamp)]


def rtabmap_link_fields(query_node: int, match_node: int, pose: RelativePose) -> dict:
    """The rtabmap_msgs/Link fields for one closure (see the module docstring)."""
    inverse = inverse_constraint(pose)  # query_T_match: RTAB-Map's transform is `to` in `from`
    cov = np.array(inverse.covariance, np.float64)
    if not pose.metric:
        cov[:3, :] = cov[:, :3] = 0.0
        cov[:3, :3] = np.eye(3) * 1e3
    return {
        "from_id": int(query_node),
        "to_id": int(match_node),
        "type": RTABMAP_USER_CLOSURE,
        "translation": [float(v) for v in inverse.translation],
        "rotation": matrix_to_quaternion(inverse.rotation),
        "information": [float(v) for v in np.ravel(information_matrix(cov))],
    }


class RtabmapAdapter:
    def __init__(self, node, msgs_module=None, srv_module=None):
        """``msgs_module`` / ``srv_module``: rtabmap_msgs.msg / .srv (stand-ins in tests)."""
        self.node = node
        self.msgs = msgs_module or importlib.import_module("rtabmap_msgs.msg")
        self.srvs = srv_module or importlib.import_module("rtabmap_msgs.srv")
        self.tolerance_ns = int(node.get_parameter("stamp_tolerance").value * 1e9)
        self.client = node.create_client(self.srvs.AddLink, "rtabmap/add_link")
        node.create_subscription(
            self.msgs.MapData, "rtabmap/mapData", guarded(node, "map_data", self.on_map), 5
        )
        self.nodes: OrderedDict[int, int] = OrderedDict()  # stamp (ns) -> RTAB-Map node id

    def on_map(self, msg) -> None:
        for data in msg.nodes:
            self.nodes[int(round(float(data.stamp) * 1e9))] = int(data.id)
        while len(self.nodes) > MAX_RTABMAP_NODES:
            self.nodes.popitem(last=False)

    def node_at(self, stamp_ns: int) -> int | None:
        best = min(self.nodes, key=lambda s: abs(s - stamp_ns), default=None)
        return self.nodes[best] if best is not None and abs(best - stamp_ns) <= self.tolerance_ns else None

    def send(self, msg: LoopClosure) -> str:
        pose = body_pose_of(msg)
        if pose is None:
            return "no_body_constraint"
        query, match = self.node_at(stamp_to_ns(msg.query_stamp)), self.node_at(stamp_to_ns(msg.match_stamp))
        if query is None or match is None:
            return "no_rtabmap_node_at_stamp"
        if not self.client.service_is_ready():
            return "add_link_unavailable"
        fields = rtabmap_link_fields(query, match, pose)
        link = self.msgs.Link(from_id=fields["from_id"], to_id=fields["to_id"], type=fields["type"])
        t = link.transform
        t.translation.x, t.translation.y, t.translation.z = fields["translation"]
        t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w = fields["rotation"]
        link.information = fields["information"]
        self.client.call_async(self.srvs.AddLink.Request(link=link))
        return "sent"


ADAPTERS = {"liosam": LioSamAdapter, "rtabmap": RtabmapAdapter}


class BackendAdapterNode(Node):
    def __init__(self, adapter_factory=None, **kwargs):
        super().__init__("backend_adapter_node", **kwargs)
        declare_node_parameters(self, "backend_adapter_node")
        name = self.get_parameter("backend").value
        if adapter_factory is None and name not in ADAPTERS:
            raise ValueError(f"backend '{name}' is not one of {', '.join(ADAPTERS)}")
        self.adapter = (adapter_factory or ADAPTERS[name])(self)
        self.counts: Counter = Counter()
        self._sent: OrderedDict[tuple[int, int], None] = OrderedDict()
        topic = self.get_parameter("loop_closure_topic").value
        self.create_subscription(LoopClosure, topic, guarded(self, "loop", self._on_loop), 100)
        period = self.get_parameter("diagnostics_period").value
        self.diagnostics = NodeDiagnostics(self, f"adapter {name}", self._diagnostics, period)

    def _on_loop(self, msg: LoopClosure) -> None:
        if msg.status != LoopClosure.ACCEPTED:
            return
        key = (int(msg.query_id), int(msg.match_id))
        if key in self._sent:
            self.counts["duplicate"] += 1
            return
        outcome = self.adapter.send(msg)
        self.counts[outcome] += 1
        if outcome == "sent":
            self._sent[key] = None
            while len(self._sent) > 10_000:
                self._sent.popitem(last=False)

    def _diagnostics(self):
        return OK, f"{self.counts['sent']} loop closures sent", dict(sorted(self.counts.items()))


def main(args=None) -> None:
    from .spin import run_nodes

    run_nodes([BackendAdapterNode], args)


if __name__ == "__main__":
    main()
