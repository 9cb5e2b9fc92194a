"""Input sequences for evaluation: an image folder or a rosbag2, as frames in order.

Both yield ``SourceFrame`` (index, stamp, RGB image, camera matrix, ground-truth pose, and
where the input has them: exact stamp, depth, lens, body odometry, camera extrinsics) and know
their length up front (for the progress bar). Bags are read with the pure-Python ``rosbags``
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

from ..geometry import camera_matrix_for_width, pose_matrix
from ..image_conversion import (
    DEFAULT_MAX_IMAGE_PIXELS,
    BadImageError,
    decode_compressed,
    decode_raw,
    read_image_file,
)
from ..lens import RECTIFIED, Lens
from .ground_truth import GroundTruthError, PoseTrack
from .input_files import (  # noqa: F401 - the readers are re-exported: callers import them from here
    SourceError,
    read_camera_info_yaml,
    read_depth_file,
    read_extrinsics_yaml,
    read_lens_yaml,
    read_stamps_ns,
    write_camera_info_yaml,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = (
    "nav_msgs/msg/Odometry",
    "geometry_msgs/msg/PoseStamped",
    "geometry_msgs/msg/PoseWithCovarianceStamped",
)
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


@dataclass
class SourceFrame:
    index: int  # position in the input (file order or image message order)
    stamp: float  # seconds
    image: np.ndarray  # HxWx3 uint8 RGB
    camera_matrix: np.ndarray | None = None
    pose: np.ndarray | None = None  # 4x4 ground truth world_T_camera when the input has poses
    stamp_ns: int | None = None  # exact stamp (header, stamps file); None: only ``stamp`` is known
    depth: np.ndarray | None = None  # HxW float32 metres aligned with ``image``, 0 = no depth
    lens: Lens = RECTIFIED
    odometry: np.ndarray | None = None  # 4x4 odom_T_base of the body (what the robot estimates)
    base_T_camera: np.ndarray | None = None  # camera extrinsics in the body frame


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


def _intrinsics(source, width: int):
    """The source's intrinsics for an image ``width`` wide (calibrated at camera_size = (w, h))."""
    size = source.camera_size
    return camera_matrix_for_width(source.camera_matrix, size[0] if size else None, width)


class ImageFolderSource:
    """Images of a folder in natural filename order, ``frame_period`` seconds apart (or at
    ``stamps_ns``, one exact stamp per image).

    Optional: ``depth_folder`` with a depth image of the same name (stem) per image; body
    ``odometry`` and ground-truth ``poses`` looked up by stamp (within ``max_pose_dt``);
    ``lens`` and ``base_T_camera`` given to every frame. An image that cannot be read, or is
    over ``max_image_pixels`` (checked from its header, before decoding), stops the run with a
    SourceError naming the file.
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
        depth_folder: str | Path | None = None,
        stamps_ns: list[int] | None = None,
        odometry: PoseTrack | None = None,
        base_T_camera: np.ndarray | None = None,
        lens: Lens = RECTIFIED,
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
        self.odometry = odometry
        self.base_T_camera = base_T_camera
        self.lens = lens
        self.stamps_ns = None
        if stamps_ns is not None:
            if len(stamps_ns) < len(self.files):
                raise SourceError(f"{len(stamps_ns)} stamps for {len(self.files)} images")
            self.stamps_ns = [int(ns) for ns in stamps_ns[: len(self.files)]]
            if any(b <= a for a, b in zip(self.stamps_ns[:-1], self.stamps_ns[1:], strict=True)):
                raise SourceError("frame stamps must increase")
        self.depth_files = None
        if depth_folder is not None:
            by_stem = {p.stem: p for p in list_images(depth_folder)}
            missing = [p.name for p in self.files if p.stem not in by_stem]
            if missing:
                raise SourceError(f"{depth_folder}: no depth image for {missing[0]} ({len(missing)} missing)")
            self.depth_files = [by_stem[p.stem] for p in self.files]
        # "dataset/images" reads better than "images" in titles.
        parent = self.folder.resolve().parent.name
        self.name = f"{parent}/{self.folder.name}" if parent else self.folder.name
        self.bad_images = 0

    def __len__(self) -> int:
        return len(self.files)

    def stamp(self, index: int) -> float:
        if self.stamps_ns is not None:
            return self.stamps_ns[index] / 10**9  # int / int: correctly rounded
        return self.start_time + index * self.frame_period

    def __iter__(self) -> Iterator[SourceFrame]:
        for i, path in enumerate(self.files):
            try:
                rgb = read_image_file(path, self.max_image_pixels)
                depth = None
                if self.depth_files is not None:
                    path = self.depth_files[i]
                    depth = read_depth_file(path, self.max_image_pixels)
            except (OSError, BadImageError) as err:
                raise SourceError(f"cannot read image {path}: {err}") from None
            if depth is not None and depth.shape != rgb.shape[:2]:
                raise SourceError(
                    f"{path}: depth {depth.shape[::-1]} is not the image size {rgb.shape[1::-1]}"
                )
            stamp = self.stamp(i)
            yield SourceFrame(
                i,
                stamp,
                rgb,
                _intrinsics(self, rgb.shape[1]),
                _lookup(self.poses, stamp, i, self.max_pose_dt),
                stamp_ns=None if self.stamps_ns is None else self.stamps_ns[i],
                depth=depth,
                lens=self.lens,
                odometry=_lookup(self.odometry, stamp, i, self.max_pose_dt),
                base_T_camera=self.base_T_camera,
            )


def _lookup(track: PoseTrack | None, stamp: float, index: int, max_dt: float) -> np.ndarray | None:
    return track.lookup(stamp, index, max_dt) if track is not None else None


def _stamp_ns(msg, bag_time_ns: int) -> int:
    """Exact header stamp in nanoseconds; the bag's receive time when the header was never set."""
    stamp = msg.header.stamp
    if stamp.sec == 0 and stamp.nanosec == 0:
        return int(bag_time_ns)
    return int(stamp.sec) * 10**9 + int(stamp.nanosec)


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

    Optional: the first CameraInfo of ``camera_info_topic`` gives the intrinsics and lens; the
    messages of ``pose_topic`` (Odometry, PoseStamped, PoseWithCovarianceStamped) or an
    external ``poses`` track give each frame's ground-truth pose (nearest stamp within
    ``max_pose_dt``); an ``odometry`` track (body) and ``base_T_camera`` as for image folders.
    Frames carry their exact header stamp in ``stamp_ns``.
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
        odometry: PoseTrack | None = None,
        base_T_camera: np.ndarray | None = None,
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
        self.lens = RECTIFIED
        self.odometry = odometry
        self.base_T_camera = base_T_camera
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
                try:
                    self.lens = Lens.from_camera_info(msg.distortion_model, msg.d)
                except ValueError as err:
                    raise SourceError(f"{self.path}: CameraInfo on {topic}: {err}") from None
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
                stamp_ns = _stamp_ns(msg, t)
                stamp = stamp_ns / 10**9
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
                yield SourceFrame(
                    i,
                    stamp,
                    rgb,
                    _intrinsics(self, rgb.shape[1]),
                    _lookup(self.poses, stamp, i, self.max_pose_dt),
                    stamp_ns=stamp_ns,
                    lens=self.lens,
                    odometry=_lookup(self.odometry, stamp, i, self.max_pose_dt),
                    base_T_camera=self.base_T_camera,
                )
