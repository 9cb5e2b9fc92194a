"""A camera's optional streams (CameraInfo, aligned depth, odometry) matched to its images.

The descriptor node's subscriptions feed the buffers here; its worker turns each image
message into the pipeline's ``Frame`` with the intrinsics, depth and pose that belong to it.
"""

from __future__ import annotations

from collections import Counter, deque

from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image

from ..geometry import camera_matrix_for_width
from ..image_conversion import DEFAULT_MAX_IMAGE_PIXELS, BadImageError
from ..types import Frame
from .conversions import (
    camera_matrix_from_info,
    depth_msg_to_array,
    image_msg_to_rgb,
    pose_to_matrix,
    stamp_to_sec,
)

# Sensor streams are matched to an image by stamp within this tolerance (seconds).
SYNC_TOLERANCE = 0.05


def _nearest(buffer: deque, stamp: float, tolerance: float):
    best = min(buffer, key=lambda item: abs(item[0] - stamp), default=None)
    return best[1] if best is not None and abs(best[0] - stamp) <= tolerance else None


class SensorSync:
    """Unusable images and depth are counted in ``counts`` (``bad_image.<reason>``,
    ``bad_depth.<reason>``, ``depth_size_mismatch``); a skipped image is also logged."""

    def __init__(self, counts: Counter, log):
        self.counts = counts
        self.log = log
        self._camera_matrix = None
        self._camera_info_size = None
        self._depth: deque = deque(maxlen=10)
        self._poses: deque = deque(maxlen=200)

    # -- subscription callbacks: cheap, never block -----------------------------------------------
    def on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_matrix = camera_matrix_from_info(msg)
        self._camera_info_size = (msg.height, msg.width)

    def on_depth(self, msg: Image) -> None:
        self._depth.append((stamp_to_sec(msg.header.stamp), msg))

    def on_odom(self, msg: Odometry) -> None:
        pose = pose_to_matrix(msg.pose.pose)
        if pose is None:  # NaN or a zero quaternion: never offered to the keyframe gate
            self.counts["bad_odometry"] += 1
            return
        self._poses.append((stamp_to_sec(msg.header.stamp), pose))

    # -- worker ----------------------------------------------------------------------------------
    def frame(self, msg, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Frame | None:
        """The image message as a Frame; None for an image that cannot be decoded or has more
        than ``max_pixels`` (checked from the header, before decoding)."""
        stamp = stamp_to_sec(msg.header.stamp)
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
        if (depth_msg := _nearest(self._depth, stamp, SYNC_TOLERANCE)) is not None:
            try:
                depth = depth_msg_to_array(depth_msg, max_pixels)
                if depth.shape != rgb.shape[:2]:
                    self.counts["depth_size_mismatch"] += 1
                    depth = None
            except BadImageError as err:
                self.counts[f"bad_depth.{err.reason}"] += 1
        pose = _nearest(self._poses, stamp, SYNC_TOLERANCE * 2)
        return Frame(stamp, rgb, msg.header.frame_id, camera_matrix, depth, pose)
