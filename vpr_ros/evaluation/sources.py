"""Input sequences for evaluation: an image folder or a rosbag2, as frames in order.

Both yield ``SourceFrame`` (index, stamp, RGB image, camera matrix, pose) and know their
length up front (for the progress bar). Bags are read with the pure-Python ``rosbags``
library (rosbag2 in mcap or sqlite3 storage; no ROS installation needed); image payloads go
through ``vpr_ros.image_conversion`` like on the robot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..geometry import camera_matrix_for_width, pose_matrix
from ..image_conversion import (
    DEFAULT_MAX_IMAGE_PIXELS,
    BadImageError,
    decode_compressed,
    decode_raw,
    read_image_file,
)
from .ground_truth import GroundTruthError, PoseTrack

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = (
    "nav_msgs/msg/Odometry",
    "geometry_msgs/msg/PoseStamped",
    "geometry_msgs/msg/PoseWithCovarianceStamped",
)
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


class SourceError(RuntimeError):
    """An input that cannot be read as a sequence of frames (says which and why)."""


@dataclass
class SourceFrame:
    index: int  # position in the input (file order or image message order)
    stamp: float  # seconds
    image: np.ndarray  # HxWx3 uint8 RGB
    camera_matrix: np.ndarray | None = None
    pose: np.ndarray | None = None  # 4x4 world_T_camera when the input has poses


def natural_sort_key(name: str) -> list:
    """'img2.png' before 'img10.png': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"image folder not found: {folder}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise SourceError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=lambda p: natural_sort_key(p.name))


def read_camera_info_yaml(path: str | Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Camera matrix (and (width, height) when given) from a ROS camera calibration YAML.

    Accepts the camera_calibration_parsers layout (``camera_matrix: {data: [9 numbers]}``,
    ``image_width``, ``image_height``) or a top-level ``k``/``K`` list of 9 numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"camera info file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    k = data.get("camera_matrix", data.get("k", data.get("K")))
    if isinstance(k, dict):
        k = k.get("data")
    try:
        matrix = np.asarray(k, dtype=np.float64).reshape(3, 3)
    except (TypeError, ValueError):
        raise SourceError(f"{path}: no 3x3 camera_matrix (camera_matrix.data or k: 9 numbers)") from None
    size = None
    if data.get("image_width") and data.get("image_height"):
        size = (int(data["image_width"]), int(data["image_height"]))
    return matrix, size


def write_camera_info_yaml(path: str | Path, camera_matrix: np.ndarray, width: int, height: int) -> None:
    """A pinhole camera without distortion in the camera_calibration_parsers layout."""
    k = [float(v) for v in np.ravel(camera_matrix)]
    p = [k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0]
    data = {
        "image_width": int(width),
        "image_height": int(height),
        "camera_name": "camera",
        "camera_matrix": {"rows": 3, "cols": 3, "data": k},
        "distortion_model": "plumb_bob",
        "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.0] * 5},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]},
        "projection_matrix": {"rows": 3, "cols": 4, "data": p},
    }
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def _intrinsics(source, width: int):
    """The source's intrinsics for an image ``width`` wide (calibrated at camera_size = (w, h))."""
    size = source.camera_size
    return camera_matrix_for_width(source.camera_matrix, size[0] if size else None, width)


class ImageFolderSource:
    """Images of a folder in natural filename order, ``frame_period`` seconds apart.

    An image that cannot be read, or is over ``max_image_pixels`` (checked from its header,
    before decoding), stops the run with a SourceError naming the file.
    """

    def __init__(
        self,
        folder: str | Path,
        frame_period: float = 1.0,
        camera_matrix: np.ndarray | None = None,
        camera_size: tuple[int, int] | None = None,
        poses: PoseTrack | None = None,
        max_pose_dt: float = 0.1,
        max_frames: int | None = None,
        start_time: float = 0.0,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        if frame_period <= 0:
            raise SourceError(f"frame period must be > 0, got {frame_period}")
        self.folder = Path(folder)
        self.files = list_images(folder)[:max_frames]
        self.frame_period = frame_period
        self.start_time = start_time
        self.max_image_pixels = max_image_pixels
        self.camera_matrix = camera_matrix
        self.camera_size = camera_size
        self.poses = poses
        self.max_pose_dt = max_pose_dt
        # "dataset/images" reads better than "images" in titles.
        parent = self.folder.resolve().parent.name
        self.name = f"{parent}/{self.folder.name}" if parent else self.folder.name
        self.bad_images = 0

    def __len__(self) -> int:
        return len(self.files)

    def stamp(self, index: int) -> float:
        return self.start_time + index * self.frame_period

    def __iter__(self) -> Iterator[SourceFrame]:
        for i, path in enumerate(self.files):
            try:
                rgb = read_image_file(path, self.max_image_pixels)
            except (OSError, BadImageError) as err:
                raise SourceError(f"cannot read image {path}: {err}") from None
            stamp = self.stamp(i)
            pose = self.poses.lookup(stamp, i, self.max_pose_dt) if self.poses is not None else None
            yield SourceFrame(i, stamp, rgb, _intrinsics(self, rgb.shape[1]), pose)


def _stamp(msg, bag_time_ns: int) -> float:
    """Header stamp in seconds; the bag's receive time when the header was never set."""
    stamp = msg.header.stamp
    if stamp.sec == 0 and stamp.nanosec == 0:
        return bag_time_ns * 1e-9
    return stamp.sec + stamp.nanosec * 1e-9


def pose_from_message(msg, msgtype: str) -> np.ndarray:
    """Odometry, PoseStamped or PoseWithCovarianceStamped -> 4x4 world_T_body."""
    if msgtype == "geometry_msgs/msg/PoseStamped":
        pose = msg.pose
    elif msgtype in ("nav_msgs/msg/Odometry", "geometry_msgs/msg/PoseWithCovarianceStamped"):
        pose = msg.pose.pose
    else:
        raise SourceError(f"unsupported pose message type {msgtype} (use one of {', '.join(POSE_TYPES)})")
    o, p = pose.orientation, pose.position
    try:
        return pose_matrix((p.x, p.y, p.z), (o.x, o.y, o.z, o.w))
    except ValueError as err:
        raise GroundTruthError(str(err)) from None


class BagSource:
    """Image messages of one topic of a rosbag2 (directory, .mcap or .db3 file), in bag order.

    Optional: the first CameraInfo of ``camera_info_topic`` gives the intrinsics; the
    messages of ``pose_topic`` (Odometry, PoseStamped, PoseWithCovarianceStamped) or an
    external ``poses`` track give each frame's pose (nearest stamp within ``max_pose_dt``).
    Image messages that cannot be decoded, or are over ``max_image_pixels``, are skipped and
    counted in ``bad_images`` (their index is kept, so a ground-truth matrix stays aligned).
    """

    def __init__(
        self,
        path: str | Path,
        image_topic: str,
        camera_info_topic: str | None = None,
        pose_topic: str | None = None,
        poses: PoseTrack | None = None,
        max_pose_dt: float = 0.1,
        max_frames: int | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        parent = self.path.resolve().parent.name
        self.name = f"{parent}/{self.path.name}" if parent else self.path.name
        if not self.path.exists():
            raise SourceError(f"bag not found: {self.path}")
        self.image_topic = image_topic
        self.max_pose_dt = max_pose_dt
        self.max_image_pixels = max_image_pixels
        self.bad_images = 0
        self.bad_image_reasons: dict[str, int] = {}
        self.camera_matrix: np.ndarray | None = None
        self.camera_size: tuple[int, int] | None = None
        self._typestore = get_typestore(Stores.ROS2_HUMBLE)  # for bags without type definitions
        self._reader_cls = AnyReader
        with self._open() as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            total = sum(c.msgcount for c in self._connections(reader, image_topic, IMAGE_TYPES, topics))
            self.num_frames = total if max_frames is None else min(total, max_frames)
            if self.num_frames == 0:
                raise SourceError(f"{self.path}: topic {image_topic} has no messages")
            if camera_info_topic:
                self._read_camera_info(reader, camera_info_topic, topics)
            self.poses = poses
            if pose_topic:
                if poses is not None:
                    raise SourceError("give either a pose topic or a pose file, not both")
                self.poses = self._read_poses(reader, pose_topic, topics)

    @contextmanager
    def _open(self):
        try:
            reader = self._reader_cls([self.path], default_typestore=self._typestore)
            reader.open()
        except Exception as err:  # rosbags raises several types; all mean "unreadable"
            raise SourceError(f"cannot open bag {self.path}: {err} (truncated or not a rosbag2?)") from err
        try:
            yield reader
        finally:
            reader.close()

    def _connections(self, reader, topic: str, types: tuple[str, ...], topics: dict[str, str]):
        if topic not in topics:
            wanted = sorted(t for t, ty in topics.items() if ty in types)
            raise SourceError(
                f"{self.path}: no topic {topic}; topics of type {' or '.join(types)}: "
                f"{', '.join(wanted) if wanted else 'none'} (all topics: {', '.join(sorted(topics))})"
            )
        if topics[topic] not in types:
            raise SourceError(f"{self.path}: {topic} is {topics[topic]}, expected {' or '.join(types)}")
        return [c for c in reader.connections if c.topic == topic]

    def _messages(self, reader, connections):
        """(connection, bag time ns, message); a read failure becomes a SourceError."""
        try:
            for conn, t, raw in reader.messages(connections=connections):
                yield conn, t, reader.deserialize(raw, conn.msgtype)
        except SourceError:
            raise
        except Exception as err:
            raise SourceError(
                f"bag {self.path} is truncated or corrupt while reading {connections[0].topic}: "
                f"{type(err).__name__}: {err}"
            ) from err

    def _read_camera_info(self, reader, topic: str, topics: dict[str, str]) -> None:
        connections = self._connections(reader, topic, (CAMERA_INFO_TYPE,), topics)
        for _, _, msg in self._messages(reader, connections):
            k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
            if k[0, 0] > 0 and k[1, 1] > 0:
                self.camera_matrix = k
                self.camera_size = (int(msg.width), int(msg.height))
                return
        raise SourceError(f"{self.path}: no CameraInfo with a valid K on {topic}")

    def _read_poses(self, reader, topic: str, topics: dict[str, str]) -> PoseTrack:
        connections = self._connections(reader, topic, POSE_TYPES, topics)
        stamps, poses = [], []
        for conn, t, msg in self._messages(reader, connections):
            stamps.append(_stamp(msg, t))
            poses.append(pose_from_message(msg, conn.msgtype))
        if not poses:
            raise SourceError(f"{self.path}: pose topic {topic} has no messages")
        order = np.argsort(stamps, kind="stable")
        return PoseTrack(
            np.stack(poses)[order], np.asarray(stamps)[order], f"topic {topic} ({topics[topic]})"
        )

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self) -> Iterator[SourceFrame]:
        with self._open() as reader:
            connections = [c for c in reader.connections if c.topic == self.image_topic]
            for i, (conn, t, msg) in enumerate(self._messages(reader, connections)):
                if i >= self.num_frames:
                    return
                stamp = _stamp(msg, t)
                try:
                    if conn.msgtype == "sensor_msgs/msg/CompressedImage":
                        rgb = decode_compressed(msg.format, msg.data, self.max_image_pixels)
                    else:
                        rgb = decode_raw(
                            msg.encoding,
                            msg.height,
                            msg.width,
                            msg.step,
                            msg.data,
                            bool(msg.is_bigendian),
                            self.max_image_pixels,
                        )
                except BadImageError as err:
                    self.bad_images += 1
                    self.bad_image_reasons[err.reason] = self.bad_image_reasons.get(err.reason, 0) + 1
                    continue
                pose = self.poses.lookup(stamp, i, self.max_pose_dt) if self.poses is not None else None
                yield SourceFrame(i, stamp, rgb, _intrinsics(self, rgb.shape[1]), pose)
