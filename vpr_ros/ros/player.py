"""Publishes an image sequence into the graph and collects what comes out.

Used by the demo, the integration tests and replay evaluation. In lock-step mode each frame
waits for its keyframe to come back on vpr/keyframes before the next one is sent, so a slow
machine changes timing but never the result; otherwise frames go out at a fixed rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..lens import RECTIFIED, Lens
from ..msg import Keyframe as KeyframeMsg
from ..msg import LoopClosure
from .conversions import (
    depth_to_image_msg,
    matrix_to_pose,
    ns_to_stamp,
    rgb_to_image_msg,
    sec_to_stamp,
    stamp_to_ns,
)


def as_time(stamp):
    """A frame stamp as builtin_interfaces/Time: an int is exact nanoseconds, a float seconds."""
    if isinstance(stamp, (int, np.integer)):
        return ns_to_stamp(int(stamp))
    return sec_to_stamp(float(stamp))


class SequencePlayer(Node):
    def __init__(
        self,
        image_topic: str = "/camera/image_raw",
        camera_info_topic: str = "",
        compressed: bool = False,
        frame_id: str = "camera",
        depth_topic: str = "",
        odom_topic: str = "",
        base_frame: str = "base_link",
        **node_kwargs,
    ):
        super().__init__("vpr_sequence_player", **node_kwargs)
        self.compressed = compressed
        self.frame_id = frame_id
        self.base_frame = base_frame
        self.image_pub = self.create_publisher(CompressedImage if compressed else Image, image_topic, 10)
        self.info_pub = (
            self.create_publisher(CameraInfo, camera_info_topic, 10) if camera_info_topic else None
        )
        self.depth_pub = self.create_publisher(Image, depth_topic, 10) if depth_topic else None
        self.odom_pub = self.create_publisher(Odometry, odom_topic, 50) if odom_topic else None
        self._lock = threading.Condition()
        self.keyframes: dict[int, int] = {}  # keyframe id -> exact stamp (ns)
        self.closures: list[LoopClosure] = []
        self.rejected: list[LoopClosure] = []
        self.create_subscription(KeyframeMsg, "vpr/keyframes", self._on_keyframe, 100)
        self.create_subscription(LoopClosure, "vpr/loop_closures", self._on_closure, 100)
        self.create_subscription(LoopClosure, "vpr/rejected", self._on_rejected, 100)
        self.path: Path | None = None  # the latest vpr/optimized_path (pose_graph_node)
        self.path_count = 0
        self.create_subscription(Path, "vpr/optimized_path", self._on_path, 2)
        self.diagnostics: dict[str, dict[str, str]] = {}  # latest /diagnostics values per node
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 20)

    def _on_diagnostics(self, msg) -> None:
        with self._lock:
            for status in msg.status:
                node = status.name.split(":")[0]
                self.diagnostics[node] = {kv.key: kv.value for kv in status.values}
            self._lock.notify_all()

    def _connected(self, node: str, key: str) -> bool:
        value = self.diagnostics.get(node, {}).get(key, "0")
        return value.isdigit() and int(value) > 0

    def _on_keyframe(self, msg) -> None:
        with self._lock:
            self.keyframes[int(msg.id)] = stamp_to_ns(msg.header.stamp)
            self._lock.notify_all()

    def _on_closure(self, msg) -> None:
        with self._lock:
            self.closures.append(msg)
            self._lock.notify_all()

    def _on_path(self, msg) -> None:
        with self._lock:
            self.path, self.path_count = msg, self.path_count + 1
            self._lock.notify_all()

    def fresh_path(self, timeout: float = 10.0) -> Path | None:
        """A vpr/optimized_path published after this call started (so it holds every loop the
        pose graph had by then): the second one to arrive from now."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self.path_count + 2
            while self.path_count < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(remaining)
            return self.path

    def _on_rejected(self, msg) -> None:
        with self._lock:
            self.rejected.append(msg)
            self._lock.notify_all()

    def wait_for_graph(self, timeout: float = 30.0, abort=None) -> None:
        """Block until the descriptor node listens, the loop-closure node publishes, and (from
        their /diagnostics) the descriptor's candidates and the re-ranker's verdicts have a
        matched subscriber: messages sent before DDS matched both ends are lost.

        ``abort``: called while waiting; a message it returns (a node process died) is raised
        as RuntimeError at once instead of waiting out the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if abort is not None and (error := abort()):
                raise RuntimeError(error)
            with self._lock:
                pipeline = self._connected("descriptor_node", "candidates_subscribers") and self._connected(
                    "reranker_node", "verified_subscribers"
                )
            if (
                pipeline
                and self.image_pub.get_subscription_count() > 0
                and self.count_publishers("vpr/loop_closures") > 0
            ):
                time.sleep(0.5)  # matching is not instantaneous on the subscriber's side
                return
            time.sleep(0.1)
        with self._lock:
            seen = {
                n: {k: v for k, v in d.items() if k.endswith("_subscribers")}
                for n, d in self.diagnostics.items()
            }
        raise TimeoutError(f"vpr_ros graph not connected after {timeout:.0f} s; diagnostics seen: {seen}")

    def make_image_msg(self, image: np.ndarray, stamp):
        header_stamp = as_time(stamp)
        if self.compressed:
            ok, buf = cv2.imencode(
                ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
            )
            msg = CompressedImage(format="jpeg", data=buf.tobytes())
        else:
            msg = rgb_to_image_msg(image)
        msg.header.stamp = header_stamp
        msg.header.frame_id = self.frame_id
        return msg

    def publish_raw(self, msg) -> None:
        self.image_pub.publish(msg)

    def publish_frame(
        self,
        image: np.ndarray,
        stamp,
        camera_matrix: np.ndarray | None = None,
        depth: np.ndarray | None = None,
        odom_pose: np.ndarray | None = None,
        lens: Lens = RECTIFIED,
    ) -> None:
        """Odometry (odom_T_base), CameraInfo and depth first, all with the image's stamp."""
        if self.odom_pub is not None and odom_pose is not None:
            odom = Odometry()
            odom.header.stamp, odom.header.frame_id = as_time(stamp), "odom"
            odom.child_frame_id = self.base_frame
            odom.pose.pose = matrix_to_pose(odom_pose[:3, :3], odom_pose[:3, 3])
            self.odom_pub.publish(odom)
        if self.info_pub is not None and camera_matrix is not None:
            info = CameraInfo()
            info.header.stamp = as_time(stamp)
            info.header.frame_id = self.frame_id
            info.height, info.width = image.shape[:2]
            info.k = [float(v) for v in np.ravel(camera_matrix)]
            info.distortion_model, info.d = lens.to_camera_info()
            self.info_pub.publish(info)
        if self.depth_pub is not None and depth is not None:
            depth_msg = depth_to_image_msg(depth)
            depth_msg.header.stamp, depth_msg.header.frame_id = as_time(stamp), self.frame_id
            self.depth_pub.publish(depth_msg)
        self.image_pub.publish(self.make_image_msg(image, stamp))

    def wait_keyframe_with_stamp(self, stamp, timeout: float) -> int | None:
        stamp_ns = stamp_to_ns(as_time(stamp))
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for kf_id, kf_stamp in self.keyframes.items():
                    if kf_stamp == stamp_ns:
                        return kf_id
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(remaining)

    def play(
        self,
        images: Sequence[np.ndarray],
        stamps: Sequence[float],
        camera_matrix=None,
        lockstep: bool = True,
        rate_hz: float = 10.0,
        frame_timeout: float = 60.0,
        resend_after: float = 5.0,
        wait_decision: bool = True,
        progress=None,
        depths: Sequence[np.ndarray] | None = None,
        odometry: Sequence[np.ndarray] | None = None,
        lens: Lens = RECTIFIED,
    ) -> int:
        """Publish all frames; returns how many were not played through (0: all of them).

        Lock-step waits for each frame's keyframe and, with ``wait_decision``, for the
        loop-closure decision on it (the slowest stage sets the pace, nothing is dropped); a
        frame that gets neither within ``frame_timeout`` stops the playback.
        """
        for i, (image, stamp) in enumerate(zip(images, stamps, strict=True)):
            t0 = time.monotonic()
            extra = {
                "depth": None if depths is None else depths[i],
                "odom_pose": None if odometry is None else odometry[i],
                "lens": lens,
            }
            self.publish_frame(image, stamp, camera_matrix, **extra)
            if lockstep:
                # DDS may drop a message sent right after discovery; re-sending is harmless
                # (the keyframe gate rejects a repeated stamp as too soon).
                deadline = time.monotonic() + frame_timeout
                kf_id = None
                while (kf_id := self.wait_keyframe_with_stamp(stamp, resend_after)) is None:
                    if time.monotonic() >= deadline:
                        break
                    self.publish_frame(image, stamp, camera_matrix, **extra)
                decided = kf_id is not None and (
                    not wait_decision
                    or self.wait_for_decisions(timeout=max(0.0, deadline - time.monotonic()), ids={kf_id})
                )
                if not decided:  # the graph is stuck: stop instead of waiting out every frame
                    return len(images) - i
            else:
                time.sleep(max(0.0, 1.0 / rate_hz - (time.monotonic() - t0)))
            if progress is not None:
                progress(i)
        return 0

    def wait_for_decisions(self, timeout: float = 60.0, ids=None) -> bool:
        """Wait until every keyframe seen (or those in ``ids``) has an accepted or rejected decision."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                decided = {int(m.query_id) for m in self.closures} | {int(m.query_id) for m in self.rejected}
                if set(self.keyframes if ids is None else ids) <= decided:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
