"""Body-frame constraints, camera extrinsics (parameter and tf2), odometry interpolated to the
image stamp, and lens models read from CameraInfo."""

import math
import sys
import types
from collections import Counter

import numpy as np
import pytest

from vpr_ros.constraints import body_constraint
from vpr_ros.geometry import adjoint, invert_pose, matrix_to_quaternion, pose_matrix
from vpr_ros.lens import Lens, LensError
from vpr_ros.types import RelativePose


def _random_pose(rng, scale=3.0) -> np.ndarray:
    q = rng.normal(size=4)
    return pose_matrix(rng.normal(size=3) * scale, q / np.linalg.norm(q))


def _exp(xi: np.ndarray) -> np.ndarray:
    """SE(3) exponential of a twist ordered (v, w), by the matrix exponential."""
    from scipy.linalg import expm

    v, w = xi[:3], xi[3:]
    m = np.zeros((4, 4))
    m[:3, :3] = [[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]
    m[:3, 3] = v
    return expm(m)


def test_body_constraint_equals_the_relative_pose_of_the_two_bodies():
    rng = np.random.default_rng(0)
    base_T_cam = _random_pose(rng, 0.5)
    world_T_base_m, world_T_base_q = _random_pose(rng), _random_pose(rng)
    cam_m, cam_q = world_T_base_m @ base_T_cam, world_T_base_q @ base_T_cam
    cam_rel = invert_pose(cam_m) @ cam_q
    pose = RelativePose(cam_rel[:3, :3], cam_rel[:3, 3], True, np.eye(6) * 1e-4)
    body = body_constraint(pose, base_T_cam, base_T_cam)
    expected = invert_pose(world_T_base_m) @ world_T_base_q
    np.testing.assert_allclose(body.rotation, expected[:3, :3], atol=1e-12)
    np.testing.assert_allclose(body.translation, expected[:3, 3], atol=1e-12)
    assert body_constraint(pose, None, base_T_cam) is None


def test_body_covariance_is_the_camera_covariance_moved_by_the_adjoint():
    """A small right perturbation of the camera constraint is the adjoint-mapped right
    perturbation of the body constraint (so the covariance maps with the same matrix)."""
    rng = np.random.default_rng(1)
    extrinsics = _random_pose(rng, 0.5)
    cam = _random_pose(rng)
    xi = rng.normal(size=6) * 1e-6
    body = extrinsics @ cam @ invert_pose(extrinsics)
    body_perturbed = extrinsics @ (cam @ _exp(xi)) @ invert_pose(extrinsics)
    np.testing.assert_allclose(body_perturbed, body @ _exp(adjoint(extrinsics) @ xi), atol=1e-12)
    cov = np.diag([1.0, 2.0, 3.0, 0.1, 0.2, 0.3])
    out = body_constraint(RelativePose(cam[:3, :3], cam[:3, 3], True, cov), extrinsics, extrinsics)
    np.testing.assert_allclose(out.covariance, adjoint(extrinsics) @ cov @ adjoint(extrinsics).T)


def test_a_rotation_only_constraint_stays_rotation_only_in_the_body_frame():
    rng = np.random.default_rng(2)
    extrinsics = _random_pose(rng, 0.5)
    cam = _random_pose(rng)
    direction = cam[:3, 3] / np.linalg.norm(cam[:3, 3])
    cov = np.diag([1e3] * 3 + [1e-4] * 3)
    out = body_constraint(RelativePose(cam[:3, :3], direction, False, cov), extrinsics, extrinsics)
    assert not out.metric and np.all(out.translation == 0)
    expected_rotation = extrinsics[:3, :3] @ cam[:3, :3] @ extrinsics[:3, :3].T
    np.testing.assert_allclose(out.rotation, expected_rotation, atol=1e-12)


# -- lens models -------------------------------------------------------------------------------
K = np.array([[400.0, 0, 320], [0, 400.0, 240], [0, 0, 1]])
LENSES = {
    "plumb_bob": [-0.28, 0.07, 0.001, -0.0005, 0.0],
    "rational_polynomial": [-0.3, 0.1, 0.001, -0.001, -0.02, 0.01, 0.02, 0.001],
    "equidistant": [0.05, -0.01, 0.002, -0.0005],
}


@pytest.mark.parametrize("model", sorted(LENSES))
def test_lens_undistort_inverts_project(model):
    lens = Lens.from_camera_info(model, LENSES[model])
    rng = np.random.default_rng(3)
    points = np.column_stack([rng.uniform(-0.7, 0.7, (500, 2)), np.ones(500)]) * rng.uniform(1, 5, (500, 1))
    pixels = lens.project(points, K)
    assert np.abs(pixels - (points[:, :2] / points[:, 2:] * 400 + [320, 240])).max() > 5  # it distorts
    np.testing.assert_allclose(lens.undistort(pixels, K), points[:, :2] / points[:, 2:], atol=1e-9)
    # Coefficients act on normalised coordinates: a half-size image needs only K scaled.
    half = np.diag([0.5, 0.5, 1.0]) @ K
    np.testing.assert_allclose(lens.undistort(pixels * 0.5, half), points[:, :2] / points[:, 2:], atol=1e-9)


def test_lens_from_camera_info_validates():
    assert Lens.from_camera_info("plumb_bob", [0, 0, 0, 0, 0]).is_rectified
    assert Lens.from_camera_info("", []).is_rectified
    assert Lens.from_camera_info("plumb_bob", [-0.1, 0.01]).coeffs == (-0.1, 0.01, 0.0, 0.0, 0.0)
    with pytest.raises(LensError, match="not one of"):
        Lens.from_camera_info("kannala_brandt", [0.1])
    with pytest.raises(LensError, match="takes 4"):
        Lens.from_camera_info("equidistant", [0.1, 0, 0, 0, 0.2])
    with pytest.raises(LensError, match="finite"):
        Lens.from_camera_info("plumb_bob", [math.nan])


# -- the descriptor node's sensor sync (ROS messages, no node) ---------------------------------
rclpy = pytest.importorskip("rclpy")


class _Log:
    def __init__(self):
        self.lines = []

    def warn(self, text):
        self.lines.append(text)

    info = warning = warn


def _odometry(stamp_ns: int, pose: np.ndarray):
    from nav_msgs.msg import Odometry

    from vpr_ros.ros.conversions import matrix_to_pose, ns_to_stamp

    msg = Odometry()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.pose.pose = matrix_to_pose(pose[:3, :3], pose[:3, 3])
    return msg


def _image(stamp_ns: int, frame_id="camera_optical"):
    from vpr_ros.ros.conversions import ns_to_stamp, rgb_to_image_msg

    msg = rgb_to_image_msg(np.zeros((8, 8, 3), np.uint8))
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), frame_id
    return msg


def test_odometry_is_interpolated_to_the_image_stamp_and_moved_to_the_camera():
    from vpr_ros.ros.sensors import SensorSync

    extrinsics = pose_matrix((0.2, 0.0, 1.2), (-0.5, 0.5, -0.5, 0.5))
    sync = SensorSync(Counter(), _Log(), extrinsics=lambda frame: extrinsics, base_frame="base_link")
    t0 = 1_700_000_000_123_456_789
    a = pose_matrix((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    half = math.radians(30.0) / 2  # 60 deg yaw at t0 + 100 ms
    b = pose_matrix((1.0, 0.5, 0.0), (0.0, 0.0, math.sin(half), math.cos(half)))
    sync.on_odom(_odometry(t0, a))
    sync.on_odom(_odometry(t0 + 100_000_000, b))
    frame = sync.frame(_image(t0 + 25_000_000))  # a quarter of the way
    assert frame.stamp_ns == t0 + 25_000_000 and frame.base_frame == "base_link"
    body = frame.pose @ invert_pose(extrinsics)
    np.testing.assert_allclose(body[:3, 3], (0.25, 0.125, 0.0), atol=1e-9)
    yaw = math.degrees(math.atan2(body[1, 0], body[0, 0]))
    assert yaw == pytest.approx(7.5, abs=1e-6)  # slerp: a quarter of 30 deg
    np.testing.assert_array_equal(frame.base_T_camera, extrinsics)
    # No odometry around the stamp: no pose (never the nearest from long ago).
    assert sync.frame(_image(t0 + 5_000_000_000)).pose is None
    assert sync.counts["odometry_missing"] == 1


def test_an_image_waits_briefly_for_odometry_that_has_not_arrived():
    import threading

    from vpr_ros.ros.sensors import SensorSync

    sync = SensorSync(Counter(), _Log(), odom_wait_s=1.0)
    t0 = 10_000_000_000
    sync.on_odom(_odometry(t0, np.eye(4)))
    later = pose_matrix((2.0, 0, 0), (0, 0, 0, 1))
    timer = threading.Timer(0.1, lambda: sync.on_odom(_odometry(t0 + 100_000_000, later)))
    timer.start()
    frame = sync.frame(_image(t0 + 50_000_000))
    timer.join()
    np.testing.assert_allclose(frame.pose[:3, 3], (1.0, 0, 0), atol=1e-9)


def test_camera_info_distortion_reaches_the_frame_and_a_bad_model_drops_the_intrinsics():
    from sensor_msgs.msg import CameraInfo

    from vpr_ros.ros.sensors import SensorSync

    sync = SensorSync(Counter(), _Log())
    info = CameraInfo(width=8, height=8, k=[4.0, 0, 4, 0, 4.0, 4, 0, 0, 1])
    info.distortion_model, info.d = "plumb_bob", [-0.2, 0.05, 0.0, 0.0, 0.0]
    sync.on_camera_info(info)
    frame = sync.frame(_image(1))
    assert frame.lens.model == "plumb_bob" and frame.camera_matrix is not None
    info.distortion_model = "fisheye_unknown"
    sync.on_camera_info(info)
    assert sync.frame(_image(2)).camera_matrix is None
    assert sync.counts["bad_camera_info"] == 1


# -- extrinsics: parameter, tf2 (a stand-in: tf2_ros has no PyPI wheel) -------------------------
class _Node:
    def __init__(self):
        self.log = _Log()

    def get_logger(self):
        return self.log


def test_extrinsics_parameter_is_validated_and_used():
    from vpr_ros.ros.extrinsics import CameraExtrinsics, extrinsics_from_parameter

    assert extrinsics_from_parameter([]) is None
    with pytest.raises(ValueError, match="7 finite numbers"):
        extrinsics_from_parameter([0.1, 0.2])
    source = CameraExtrinsics(_Node(), "base_link", [0.2, 0, 1.2, -0.5, 0.5, -0.5, 0.5], tf2_module=None)
    np.testing.assert_allclose(source("any_frame")[:3, 3], (0.2, 0, 1.2))
    assert source.source == "parameter"


def test_extrinsics_from_tf2_when_it_is_installed(monkeypatch):
    """tf2_ros cannot be installed here: a stand-in with its Buffer/TransformListener API."""
    from geometry_msgs.msg import Transform

    from vpr_ros.ros.extrinsics import CameraExtrinsics

    q = matrix_to_quaternion(pose_matrix((0, 0, 0), (-0.5, 0.5, -0.5, 0.5))[:3, :3])
    lookups = []

    class Buffer:
        def lookup_transform(self, target, source, time):
            lookups.append((target, source))
            if source != "front_optical":
                raise LookupError(f"frame {source} does not exist")
            t = Transform()
            t.translation.x, t.translation.z = 0.3, 1.0
            t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w = q
            return types.SimpleNamespace(transform=t)

    stand_in = types.SimpleNamespace(Buffer=Buffer, TransformListener=lambda buffer, node: None)
    monkeypatch.setitem(sys.modules, "tf2_ros", stand_in)
    node = _Node()
    source = CameraExtrinsics(node, "base_link", [])
    assert source.source == "tf2"
    assert source("rear_optical") is None and "no transform" in node.log.lines[-1]
    pose = source("front_optical")
    np.testing.assert_allclose(pose[:3, 3], (0.3, 0, 1.0))
    assert source("front_optical") is pose and lookups.count(("base_link", "front_optical")) == 1
