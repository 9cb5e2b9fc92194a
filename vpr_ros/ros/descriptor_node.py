"""Descriptor node (one per camera): keyframes -> global descriptors -> map -> candidates.

Subscribes to an Image or CompressedImage topic (plus optional CameraInfo, aligned depth and
odometry), gates keyframes, encodes them, retrieves top-k map keyframes outside the recent
window and publishes /vpr/candidates (with the query keyframe) and /vpr/keyframes.
"""

from __future__ import annotations

from collections import Counter, deque

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..image_conversion import BadImageError
from ..msg import Keyframe as KeyframeMsg
from ..msg import LoopCandidates
from ..pipeline import DescriptorStage
from ..types import Frame
from .conversions import (
    camera_matrix_from_info,
    depth_msg_to_array,
    image_msg_to_rgb,
    keyframe_to_msg,
    pose_to_matrix,
    sec_to_stamp,
    stamp_to_sec,
)
from .params import declare_pipeline_parameters, read_pipeline_config
from .worker import BoundedWorker

PARAMETERS = [
    "model",
    "weights",
    "device",
    "precision",
    "keyframe_min_period",
    "keyframe_min_translation",
    "keyframe_min_rotation_deg",
    "top_k",
    "exclude_recent_keyframes",
    "exclude_recent_seconds",
    "index_factory",
    "map_device",
    "reranker",  # decides which model local features go into each keyframe
    "verification_image_width",
    "queue_size",
]
# Sensor streams are matched to an image by stamp within this tolerance (seconds).
SYNC_TOLERANCE = 0.05


def image_qos(reliability: str, depth: int) -> QoSProfile:
    if reliability not in ("reliable", "best_effort"):
        raise ValueError(f"image_reliability must be 'reliable' or 'best_effort', got '{reliability}'")
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy)


def _nearest(buffer: deque, stamp: float, tolerance: float):
    best = min(buffer, key=lambda item: abs(item[0] - stamp), default=None)
    return best[1] if best is not None and abs(best[0] - stamp) <= tolerance else None


class DescriptorNode(Node):
    def __init__(self, **kwargs):
        super().__init__("descriptor_node", **kwargs)
        declare_pipeline_parameters(self, PARAMETERS)
        self.declare_parameter("image_topic", "/camera/image_raw")
        self.declare_parameter("compressed", False)
        self.declare_parameter("camera_info_topic", "")
        self.declare_parameter("depth_topic", "")
        self.declare_parameter("odom_topic", "")
        self.declare_parameter("image_reliability", "reliable")
        self.declare_parameter("camera_name", "")
        self.config = read_pipeline_config(self, PARAMETERS)
        camera = self.get_parameter("camera_name").value or self.get_name()

        self.stage = DescriptorStage(self.config, camera=camera)  # fails fast on a missing checkpoint
        self.get_logger().info(
            f"model '{self.config.model}' on {self.stage.encoder.device}, "
            f"{self.stage.encoder.descriptor_dim}-D, "
            f"map index '{self.config.index_factory}'{' on GPU' if self.stage.map.on_gpu else ''}"
        )
        self.counts: Counter = Counter()
        self._camera_matrix = None
        self._camera_info_size = None
        self._depth: deque = deque(maxlen=10)
        self._poses: deque = deque(maxlen=200)

        self.keyframe_pub = self.create_publisher(KeyframeMsg, "vpr/keyframes", 10)
        self.candidates_pub = self.create_publisher(LoopCandidates, "vpr/candidates", 10)
        self.worker = BoundedWorker(self._process, self.config.queue_size, self.get_logger(), "descriptor")

        qos = image_qos(self.get_parameter("image_reliability").value, self.config.queue_size)
        topic = self.get_parameter("image_topic").value
        msg_type = CompressedImage if self.get_parameter("compressed").value else Image
        self.create_subscription(msg_type, topic, self._on_image, qos)
        if info_topic := self.get_parameter("camera_info_topic").value:
            self.create_subscription(CameraInfo, info_topic, self._on_camera_info, 10)
        if depth_topic := self.get_parameter("depth_topic").value:
            self.create_subscription(Image, depth_topic, self._on_depth, qos)
        if odom_topic := self.get_parameter("odom_topic").value:
            self.create_subscription(Odometry, odom_topic, self._on_odom, 50)
        self.get_logger().info(f"listening on {topic} ({msg_type.__name__})")

    # -- callbacks: cheap, never block -------------------------------------------------------
    def _on_image(self, msg) -> None:
        self.counts["frames_in"] += 1
        self.worker.submit(msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_matrix = camera_matrix_from_info(msg)
        self._camera_info_size = (msg.height, msg.width)

    def _on_depth(self, msg: Image) -> None:
        self._depth.append((stamp_to_sec(msg.header.stamp), msg))

    def _on_odom(self, msg: Odometry) -> None:
        self._poses.append((stamp_to_sec(msg.header.stamp), pose_to_matrix(msg.pose.pose)))

    # -- worker --------------------------------------------------------------------------------
    def _process(self, msg) -> None:
        stamp = stamp_to_sec(msg.header.stamp)
        try:
            rgb = image_msg_to_rgb(msg)
        except BadImageError as err:
            self.counts[f"bad_image.{err.reason}"] += 1
            self.get_logger().warn(f"skipping image at t={stamp:.3f}: {err}")
            return
        camera_matrix = self._camera_matrix
        if camera_matrix is not None and self._camera_info_size and self._camera_info_size[1]:
            scale = rgb.shape[1] / self._camera_info_size[1]  # CameraInfo may be for another resolution
            camera_matrix = np.diag([scale, scale, 1.0]) @ camera_matrix
        depth = None
        if (depth_msg := _nearest(self._depth, stamp, SYNC_TOLERANCE)) is not None:
            try:
                depth = depth_msg_to_array(depth_msg)
                if depth.shape != rgb.shape[:2]:
                    self.counts["depth_size_mismatch"] += 1
                    depth = None
            except BadImageError as err:
                self.counts[f"bad_depth.{err.reason}"] += 1
        pose = _nearest(self._poses, stamp, SYNC_TOLERANCE * 2)
        frame = Frame(stamp, rgb, msg.header.frame_id, camera_matrix, depth, pose)
        result, reason = self.stage.process(frame)
        if result is None:
            self.counts[f"gate.{reason}"] += 1
            return
        self.counts["keyframes"] += 1
        kf = result.keyframe
        self.keyframe_pub.publish(keyframe_to_msg(kf, self.config.model, with_image=False))
        out = LoopCandidates()
        out.header = msg.header
        out.query = keyframe_to_msg(kf, self.config.model, with_image=True)
        out.candidate_ids = [c.id for c in result.candidates]
        out.candidate_stamps = [sec_to_stamp(c.stamp) for c in result.candidates]
        out.similarities = [c.similarity for c in result.candidates]
        self.candidates_pub.publish(out)

    def destroy_node(self):
        self.worker.stop()
        return super().destroy_node()


def main(args=None) -> None:
    from .spin import run_nodes

    run_nodes([DescriptorNode], args)


if __name__ == "__main__":
    main()
