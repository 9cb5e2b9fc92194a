"""A camera's optional streams (CameraInfo, aligned depth, odometry) matched to its images.

The descriptor node's subscriptions feed the buffers here; its worker turns each image
message into the pipeline's ``Frame`` with the intrinsics, lens, depth and pose that belong
to it. Odometry (``odom_T_base`` of the body) is interpolated to the image stamp between the
two odometry messages around it; the camera pose is then ``odom_T_base @ base_T_camera``.
An image newer than the latest odometry waits (on the worker thread) up to ``odom_wait_s``
for the next odometry message, since odometry usually arrives a little after the image.
"""

from __future__ import annotations

import time
from collections import Counter, deque

from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image

from ..geometry import camera_matrix_for_width
from ..image_conversion import DEFAULT_MAX_IMAGE_PIXELS, BadImageError
from ..lens import RECTIFIED, LensError
from ..pose_buffer import PoseBuffer
from ..types import Frame
from .conversions import (
    camera_matrix_from_info,
    depth_msg_to_array,
    image_msg_to_rgb,
    lens_from_info,
    pose_to_matrix,
    stamp_to_ns,
    stamp_to_sec,
)

# Depth images are matched to an image by stamp within this tolerance (nanoseconds).
DEPTH_TOLERANCE_NS = 50_000_000
# Odometry kept for interpolation: 10 s at 100 Hz.
ODOMETRY_HISTORY = 1000


def _nearest(buffer: deque, stamp_ns: int, tolerance_ns: int):
    best = min(buffer, key=lambda item: abs(item[0] - stamp_ns), default=None)
    return best[1] if best is not None and abs(best[0] - stamp_ns) <= tolerance_ns else None


class SensorSync:
    """Unusable images and depth are counted in ``counts`` (``bad_image.<reason>``,
    ``bad_depth.<reason>``, ``depth_size_mismatch``); a skipped image is also logged."""

    def __init__(
        self,
        counts: Counter,
        log,
        extrinsics=None,
        base_frame: str = "",
        odom_max_gap_s: float = 0.25,
        odom_wait_s: float = 0.2,
    ):
        """``extrinsics(camera_frame) -> base_T_camera 4x4 | None`` (ros/extrinsics.py)."""
        self.counts = counts
        self.log = log
        self.extrinsics = extrinsics or (lambda frame_id: None)
        self.base_frame = base_frame
        self.odom_max_gap_ns = int(odom_max_gap_s * 1e9)
        self.odom_wait_s = odom_wait_s
        self._camera_matrix = None
        self._lens = RECTIFIED
        self._camera_info_size = None
        self._depth: deque = deque(maxlen=10)
        self._odometry = PoseBuffer(ODOMETRY_HISTORY)

    # -- subscription callbacks: cheap, never block -----------------------------------------------
    def on_camera_info(self, msg: CameraInfo) -> None:
        try:
            lens = lens_from_info(msg)
        except LensError as err:  # intrinsics without their distortion would bias every pose
            if not self.counts["bad_camera_info"]:
                self.log.warn(f"camera_info unusable, no relative poses: {err}")
            self.counts["bad_camera_info"] += 1
            self._camera_matrix = None
            return
        self._camera_matrix = camera_matrix_from_info(msg)
        self._lens = lens
        self._camera_info_size = (msg.height, msg.width)

    def on_depth(self, msg: Image) -> None:
        self._depth.append((stamp_to_ns(msg.header.stamp), msg))

    def on_odom(self, msg: Odometry) -> None:
        pose = pose_to_matrix(msg.pose.pose)
        if pose is None:  # NaN or a zero quaternion: never offered to the keyframe gate
            self.counts["bad_odometry"] += 1
            return
        self._odometry.add(stamp_to_ns(msg.header.stamp), pose)

    def body_pose(self, stamp_ns: int):
        """odom_T_base interpolated to ``stamp_ns``; waits briefly for odometry not yet arrived."""
        if not len(self._odometry):
            return None
        deadline = time.monotonic() + self.odom_wait_s
        while True:
            newest = self._odometry.latest()[0]
            # Wait only while the next message could still bracket the image (a live stream).
            if newest >= stamp_ns or stamp_ns - newest > self.odom_max_gap_ns:
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        pose = self._odometry.at(stamp_ns, self.odom_max_gap_ns)
        self.counts["odometry_interpolated" if pose is not None else "odometry_missing"] += 1
        return pose

    # -- worker ----------------------------------------------------------------------------------
    def frame(self, msg, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Frame | None:
        """The image message as a Frame; None for an image that cannot be decoded or has more
        than ``max_pixels`` (checked from the header, before decoding)."""
        stamp = stamp_to_sec(msg.header.stamp)
        stamp_ns = stamp_to_ns(msg.header.stamp)
        try:
            rgb = image_msg_to_rgb(msg, max_pixels)
        except BadImageError as err:
            self.counts[f"bad_image.{err.reason}"] += 1
            self.log.warn(f"skipping image at t={stamp:.3f}: {err}")
            return None
        # CameraInfo may be for another resolution than the image stream.
        info_width = self._camera_info_size[1] if self._camera_info_size else None
        camera_matrix = camera_matrix_for_width(self._camera_matrix, info_width, rgb.shape[1])
        depth = None
        if (depth_msg := _nearest(self._depth, stamp_ns, DEPTH_TOLERANCE_NS)) is not None:
            try:
                depth = depth_msg_to_array(depth_msg, max_pixels)
                if depth.shape != rgb.shape[:2]:
                    self.counts["depth_size_mismatch"] += 1
                    depth = None
            except BadImageError as err:
                self.counts[f"bad_depth.{err.reason}"] += 1
        base_T_camera = self.extrinsics(msg.header.frame_id)
        pose = self.body_pose(stamp_ns)
        if pose is not None and base_T_camera is not None:
            pose = pose @ base_T_camera  # odom_T_camera
        return Frame(
            stamp,
            rgb,
            msg.header.frame_id,
            camera_matrix,
            depth,
            pose,
            stamp_ns=stamp_ns,
            lens=self._lens,
            base_T_camera=base_T_camera,
            base_frame=self.base_frame if base_T_camera is not None else "",
        )
