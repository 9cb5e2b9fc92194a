"""Back-end adapters: LIO-SAM over real DDS; RTAB-Map's Link against a stand-in of rtabmap_msgs
(no PyPI wheel exists, so Link / MapData / AddLink are replaced by classes with their fields)."""

import threading
import time
import types

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from ros_processes import private_domain_id  # noqa: E402
from vpr_ros.constraints import inverse_constraint  # noqa: E402
from vpr_ros.geometry import invert_pose, pose_matrix, quaternion_to_matrix  # noqa: E402
from vpr_ros.msg import LoopClosure  # noqa: E402
from vpr_ros.ros.backend_adapter_node import (  # noqa: E402
    RTABMAP_USER_CLOSURE,
    RtabmapAdapter,
    body_pose_of,
    liosam_pair,
    rtabmap_link_fields,
)
from vpr_ros.ros.conversions import matrix_to_pose, ns_to_stamp  # noqa: E402
from vpr_ros.types import RelativePose  # noqa: E402

Q_NS, M_NS = 1_700_000_123_456_789_123, 1_700_000_001_987_654_321


def _closure(kind=LoopClosure.POSE_METRIC, constraint=None, cov=None) -> LoopClosure:
    msg = LoopClosure(status=LoopClosure.ACCEPTED, query_id=40, match_id=3)
    msg.query_stamp, msg.match_stamp = ns_to_stamp(Q_NS), ns_to_stamp(M_NS)
    msg.base_pose_kind = kind
    constraint = pose_matrix((1.0, -0.4, 0.05), (0.0, 0.0, 0.2, 0.98)) if constraint is None else constraint
    msg.base_relative_pose = matrix_to_pose(constraint[:3, :3], constraint[:3, 3])
    cov = np.diag([0.01, 0.02, 0.03, 1e-4, 2e-4, 3e-4]) if cov is None else cov
    msg.base_covariance = [float(v) for v in np.ravel(cov)]
    return msg


def test_liosam_pair_is_query_then_match_seconds():
    t_cur, t_prev = liosam_pair(_closure())
    assert t_cur == pytest.approx(Q_NS * 1e-9, abs=1e-6) and t_prev == pytest.approx(M_NS * 1e-9, abs=1e-6)


def test_liosam_adapter_publishes_over_dds_best_effort():
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray

    from vpr_ros.ros.backend_adapter_node import BackendAdapterNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=private_domain_id(7))
    adapter = BackendAdapterNode(context=context)
    listener = rclpy.create_node("lio_sam_stand_in", context=context)
    source = rclpy.create_node("vpr_stand_in", context=context)
    got = []
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)  # what LIO-SAM subscribes with
    listener.create_subscription(Float64MultiArray, "lio_loop/loop_closure_detection", got.append, qos)
    pub = source.create_publisher(LoopClosure, "vpr/loop_closures", 10)
    executor = SingleThreadedExecutor(context=context)
    for node in (adapter, listener, source):
        executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        deadline = time.monotonic() + 20
        published = 0
        while not got and time.monotonic() < deadline:
            if pub.get_subscription_count() and adapter.adapter.pub.get_subscription_count():
                pub.publish(_closure())
                published += 1
            time.sleep(0.2)
        assert got, "no loop pair reached the LIO-SAM topic"
        assert list(got[0].data) == pytest.approx(liosam_pair(_closure()), abs=1e-6)
        pub.publish(_closure())  # the same closure again: not sent twice
        deadline = time.monotonic() + 5
        while adapter.counts["duplicate"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert adapter.counts["sent"] == 1 and adapter.counts["duplicate"] >= 1
    finally:
        executor.shutdown()
        for node in (adapter, listener, source):
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_rtabmap_link_is_the_inverse_constraint_with_its_information():
    constraint = pose_matrix((1.0, -0.4, 0.05), (0.0, 0.0, 0.2, 0.98))
    cov = np.diag([0.01, 0.02, 0.03, 1e-4, 2e-4, 3e-4])
    fields = rtabmap_link_fields(17, 5, RelativePose(constraint[:3, :3], constraint[:3, 3], True, cov))
    assert (fields["from_id"], fields["to_id"], fields["type"]) == (17, 5, RTABMAP_USER_CLOSURE)
    link = pose_matrix(fields["translation"], fields["rotation"])
    np.testing.assert_allclose(link, invert_pose(constraint), atol=1e-12)  # `to` (match) in `from`
    info = np.asarray(fields["information"]).reshape(6, 6)
    pose = RelativePose(constraint[:3, :3], constraint[:3, 3], True, cov)
    expected = np.linalg.inv(inverse_constraint(pose).covariance)
    np.testing.assert_allclose(info, expected, rtol=1e-9, atol=1e-9)
    # Rotation-only: the translation carries (almost) no information.
    rot = rtabmap_link_fields(17, 5, RelativePose(constraint[:3, :3], np.zeros(3), False, cov))
    rot_info = np.asarray(rot["information"]).reshape(6, 6)
    assert np.all(np.diag(rot_info)[:3] <= 1e-3 + 1e-12) and np.all(np.diag(rot_info)[3:] > 1e3)
    np.testing.assert_allclose(quaternion_to_matrix(*rot["rotation"]), constraint[:3, :3].T, atol=1e-12)


class _StandIn:
    """A bag of attributes with defaults, like a generated ROS message."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def _rtabmap_modules():
    def link(**kw):
        transform = _StandIn(translation=_StandIn(x=0.0, y=0.0, z=0.0), rotation=_StandIn(x=0, y=0, z=0, w=1))
        return _StandIn(
            **{"from_id": 0, "to_id": 0, "type": 0, "transform": transform, "information": [], **kw}
        )

    add_link = types.SimpleNamespace(Request=lambda link: _StandIn(link=link))
    msgs = types.SimpleNamespace(Link=link, MapData=object)
    return msgs, types.SimpleNamespace(AddLink=add_link)


class _Node:
    """What RtabmapAdapter uses of a node: parameters, a service client, a subscription."""

    def __init__(self):
        self.requests = []
        self.ready = True
        self.counts = {}  # the callback guard counts errors here

        outer = self

        class Client:
            def service_is_ready(self):
                return outer.ready

            def call_async(self, request):
                outer.requests.append(request)

        self.client = Client()

    def get_parameter(self, name):
        return types.SimpleNamespace(value={"stamp_tolerance": 1e-6}[name])

    def create_client(self, srv, name):
        assert name == "rtabmap/add_link"
        return self.client

    def create_subscription(self, msg, topic, callback, depth):
        assert topic == "rtabmap/mapData"

    def get_logger(self):
        return types.SimpleNamespace(error=print, warning=print, warn=print)


def test_rtabmap_adapter_finds_rtabmap_nodes_by_stamp_and_sends_the_link():
    node = _Node()
    adapter = RtabmapAdapter(node, *_rtabmap_modules())
    assert adapter.send(_closure()) == "no_rtabmap_node_at_stamp"  # no mapData yet
    # RTAB-Map's MapData: node ids with float-second stamps (within a microsecond).
    adapter.on_map(_StandIn(nodes=[_StandIn(id=12, stamp=M_NS * 1e-9), _StandIn(id=88, stamp=Q_NS * 1e-9)]))
    assert adapter.send(_closure()) == "sent"
    link = node.requests[-1].link
    assert (link.from_id, link.to_id, link.type) == (88, 12, RTABMAP_USER_CLOSURE)
    t = link.transform.translation
    np.testing.assert_allclose((t.x, t.y, t.z), _inverse_translation(), atol=1e-9)
    assert len(link.information) == 36
    assert adapter.send(_closure(kind=LoopClosure.POSE_NONE)) == "no_body_constraint"
    node.ready = False
    assert adapter.send(_closure()) == "add_link_unavailable"


def _inverse_translation():
    return invert_pose(body_pose_of(_closure()).matrix())[:3, 3]
