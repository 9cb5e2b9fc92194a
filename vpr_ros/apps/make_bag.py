"""make_bag: write a rosbag2 from an image folder, so any image sequence can be replayed.

    make_bag --images DIR --output BAG                        # raw rgb8 images, mcap storage
    make_bag --images DIR --output BAG --compressed --storage sqlite3
    make_bag --images DIR --output BAG --poses poses.tum --pose-type odometry \\
             --camera-info camera_info.yaml

Images go out in natural filename order (img2 before img10), ``--frame-period`` seconds
apart from ``--start-time``. Poses (TUM: at their own stamps; KITTI: one per image, at the
image stamps) become nav_msgs/Odometry, geometry_msgs/PoseStamped or
PoseWithCovarianceStamped messages; ``--camera-info`` (a ROS calibration YAML) becomes one
sensor_msgs/CameraInfo per image. Needs no ROS installation (the rosbags library writes the
bag); `ros2 bag info BAG` and `evaluate --bag BAG` read it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..evaluation.ground_truth import GroundTruthError, PoseTrack, read_pose_file
from ..evaluation.sources import SourceError, list_images, read_camera_info_yaml
from ..geometry import matrix_to_quaternion

POSE_TYPES = {
    "odometry": "nav_msgs/msg/Odometry",
    "pose": "geometry_msgs/msg/PoseStamped",
    "pose_cov": "geometry_msgs/msg/PoseWithCovarianceStamped",
}
RAW_ENCODINGS = ("rgb8", "bgr8", "mono8")


@dataclass
class BagSummary:
    path: Path
    storage: str
    images: int
    poses: int
    camera_infos: int


class _Messages:
    """Builds rosbags message objects (ROS 2 Humble definitions, unchanged up to Kilted)."""

    def __init__(self):
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.ROS2_HUMBLE)
        self.t = self.store.types

    def header(self, stamp: float, frame_id: str):
        sec = int(np.floor(stamp))
        nanosec = min(int(round((stamp - sec) * 1e9)), 999_999_999)
        return self.t["std_msgs/msg/Header"](
            stamp=self.t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id
        )

    def image(self, path: Path, stamp: float, frame_id: str, compressed: bool, encoding: str):
        if compressed:
            suffix = path.suffix.lower()
            if suffix in (".jpg", ".jpeg", ".png"):
                data = np.frombuffer(path.read_bytes(), np.uint8)  # already compressed: keep bytes
                fmt = "png" if suffix == ".png" else "jpeg"
            else:
                ok, buf = cv2.imencode(".png", self._read(path))
                data, fmt = buf.ravel(), "png"
            msg = self.t["sensor_msgs/msg/CompressedImage"](
                header=self.header(stamp, frame_id), format=fmt, data=data
            )
            return msg, None  # size unknown without decoding
        bgr = self._read(path)
        if encoding == "rgb8":
            pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        elif encoding == "mono8":
            pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        else:
            pixels = bgr
        h, w = pixels.shape[:2]
        channels = 1 if pixels.ndim == 2 else 3
        msg = self.t["sensor_msgs/msg/Image"](
            header=self.header(stamp, frame_id),
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=w * channels,
            data=np.ascontiguousarray(pixels).ravel(),
        )
        return msg, (w, h)

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SourceError(f"cannot read image {path}")
        return bgr

    def camera_info(self, k: np.ndarray, width: int, height: int, stamp: float, frame_id: str):
        k = np.asarray(k, dtype=np.float64).ravel()
        p = np.array([k[0], k[1], k[2], 0, k[3], k[4], k[5], 0, k[6], k[7], k[8], 0], dtype=np.float64)
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp, frame_id),
            height=int(height),
            width=int(width),
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=k,
            r=np.eye(3).ravel(),
            p=p,
            binning_x=0,
            binning_y=0,
            roi=roi,
        )

    def pose_message(self, kind: str, pose: np.ndarray, stamp: float, world_frame: str, child_frame: str):
        t = self.t
        qx, qy, qz, qw = matrix_to_quaternion(pose[:3, :3])
        geometry = t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](
                x=float(pose[0, 3]), y=float(pose[1, 3]), z=float(pose[2, 3])
            ),
            orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
        )
        header = self.header(stamp, world_frame)
        if kind == "pose":
            return t["geometry_msgs/msg/PoseStamped"](header=header, pose=geometry)
        with_cov = t["geometry_msgs/msg/PoseWithCovariance"](pose=geometry, covariance=np.zeros(36))
        if kind == "pose_cov":
            return t["geometry_msgs/msg/PoseWithCovarianceStamped"](header=header, pose=with_cov)
        zero = t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
        twist = t["geometry_msgs/msg/TwistWithCovariance"](
            twist=t["geometry_msgs/msg/Twist"](linear=zero, angular=zero), covariance=np.zeros(36)
        )
        return t["nav_msgs/msg/Odometry"](
            header=header, child_frame_id=child_frame, pose=with_cov, twist=twist
        )


def make_bag(
    images: str | Path,
    output: str | Path,
    storage: str = "mcap",
    image_topic: str = "/camera/image_raw",
    compressed: bool = False,
    encoding: str = "rgb8",
    frame_period: float = 1.0,
    start_time: float = 0.0,
    frame_id: str = "camera",
    camera_info: str | Path | None = None,
    camera_info_topic: str = "/camera/camera_info",
    poses: str | Path | PoseTrack | None = None,
    pose_topic: str = "/odom",
    pose_type: str = "odometry",
    world_frame: str = "map",
    max_frames: int | None = None,
) -> BagSummary:
    """Write the bag; raises SourceError / GroundTruthError / ValueError on bad input."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be one of {', '.join(plugins)}, got '{storage}'")
    if pose_type not in POSE_TYPES:
        raise ValueError(f"pose type must be one of {', '.join(POSE_TYPES)}, got '{pose_type}'")
    if encoding not in RAW_ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(RAW_ENCODINGS)}, got '{encoding}'")
    if frame_period <= 0:
        raise ValueError(f"frame period must be > 0, got {frame_period}")
    output = Path(output)
    if output.exists():
        raise ValueError(f"{output} exists already; choose a new bag path")
    files = list_images(images)[:max_frames]
    stamps = [start_time + i * frame_period for i in range(len(files))]
    k = size = None
    if camera_info is not None:
        k, size = read_camera_info_yaml(camera_info)
    track = read_pose_file(poses) if isinstance(poses, (str, Path)) else poses
    if track is not None and track.stamps is None and len(track) < len(files):
        raise GroundTruthError(f"{track.source}: {len(track)} poses for {len(files)} images")

    m = _Messages()
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    n_info = n_poses = 0
    with Writer(output, version=Writer.VERSION_LATEST, storage_plugin=plugins[storage]) as writer:
        image_conn = writer.add_connection(image_topic, image_type, typestore=m.store)
        info_conn = (
            writer.add_connection(camera_info_topic, "sensor_msgs/msg/CameraInfo", typestore=m.store)
            if k is not None
            else None
        )
        pose_conn = (
            writer.add_connection(pose_topic, POSE_TYPES[pose_type], typestore=m.store)
            if track is not None
            else None
        )
        # Messages go into the bag in time order (poses of a TUM file interleave with images).
        events = [(s, 1, i) for i, s in enumerate(stamps)]
        if track is not None:
            pose_stamps = track.stamps if track.stamps is not None else stamps[: len(track)]
            events += [(float(s), 0, i) for i, s in enumerate(pose_stamps)]
        for stamp, kind, i in sorted(events):
            t_ns = max(0, int(round(stamp * 1e9)))
            if kind == 0:
                msg = m.pose_message(pose_type, track.poses[i], stamp, world_frame, frame_id)
                writer.write(pose_conn, t_ns, m.store.serialize_cdr(msg, POSE_TYPES[pose_type]))
                n_poses += 1
                continue
            msg, wh = m.image(files[i], stamp, frame_id, compressed, encoding)
            if info_conn is not None:
                if wh is None:  # compressed: the calibration size, else the file's size
                    wh = size or _image_size(files[i])
                info = m.camera_info(k, wh[0], wh[1], stamp, frame_id)
                writer.write(info_conn, t_ns, m.store.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
                n_info += 1
            writer.write(image_conn, t_ns, m.store.serialize_cdr(msg, image_type))
    return BagSummary(output, storage, len(files), n_poses, n_info)


def _image_size(path: Path) -> tuple[int, int]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return bgr.shape[1], bgr.shape[0]


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="make_bag", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", required=True, help="folder of images (natural filename order)")
    p.add_argument("--output", required=True, help="bag to create (a rosbag2 directory; must not exist)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="default: mcap")
    p.add_argument("--image-topic", default="/camera/image_raw", help="default: /camera/image_raw")
    p.add_argument(
        "--compressed",
        action="store_true",
        help="sensor_msgs/CompressedImage (jpeg/png files keep their bytes) instead of raw Image",
    )
    p.add_argument(
        "--encoding", choices=RAW_ENCODINGS, default="rgb8", help="raw image encoding (default rgb8)"
    )
    p.add_argument("--frame-period", type=float, default=1.0, help="seconds between images (default 1.0)")
    p.add_argument("--start-time", type=float, default=0.0, help="stamp of the first image in seconds")
    p.add_argument("--frame-id", default="camera", help="camera frame id (default camera)")
    p.add_argument("--camera-info", default=None, help="ROS camera calibration YAML -> CameraInfo")
    p.add_argument("--camera-info-topic", default="/camera/camera_info")
    p.add_argument("--poses", default=None, help="TUM (timestamped) or KITTI (one per image) pose file")
    p.add_argument("--pose-topic", default="/odom", help="default /odom")
    p.add_argument(
        "--pose-type",
        choices=tuple(POSE_TYPES),
        default="odometry",
        help="odometry (nav_msgs/Odometry), pose (PoseStamped) or pose_cov (PoseWithCovarianceStamped)",
    )
    p.add_argument("--world-frame", default="map", help="frame id of the poses (default map)")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N images")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    try:
        summary = make_bag(
            args.images,
            args.output,
            storage=args.storage,
            image_topic=args.image_topic,
            compressed=args.compressed,
            encoding=args.encoding,
            frame_period=args.frame_period,
            start_time=args.start_time,
            frame_id=args.frame_id,
            camera_info=args.camera_info,
            camera_info_topic=args.camera_info_topic,
            poses=args.poses,
            pose_topic=args.pose_topic,
            pose_type=args.pose_type,
            world_frame=args.world_frame,
            max_frames=args.max_frames,
        )
    except (SourceError, GroundTruthError, ValueError) as err:
        print(f"make_bag: error: {err}", file=sys.stderr)
        return 2
    extras = []
    if summary.poses:
        extras.append(f"{summary.poses} poses on {args.pose_topic}")
    if summary.camera_infos:
        extras.append(f"camera info on {args.camera_info_topic}")
    print(
        f"make_bag: wrote {summary.path} ({summary.storage}): {summary.images} images on {args.image_topic}"
        + (f", {', '.join(extras)}" if extras else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
