"""``evaluate``'s input from its command line: the source, an exported world's files, odometry.

``--world DIR`` is a folder written by ``vpr_ros.world.export`` (python -m vpr_ros.apps.world
--export DIR); its files stand in for the individual flags. ``--odom-drift`` integrates
drifting odometry from the ground-truth body poses (camera poses @ inv(base_T_camera)) with
the world generator's own drift model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..geometry import invert_pose, pose_matrix
from ..lens import RECTIFIED
from ..world.trajectory import OdometryDrift, integrate_odometry
from .ground_truth import PoseTrack, read_pose_file
from .sources import (
    BagSource,
    ImageFolderSource,
    SourceError,
    read_camera_info_yaml,
    read_extrinsics_yaml,
    read_lens_yaml,
    read_stamps_ns,
)

# evaluate's argument name -> the file of an exported world (world/export.py).
WORLD_FILES = {
    "images": "images",
    "depth": "depth",
    "stamps_ns": "stamps_ns.txt",
    "camera_info": "camera_info.yaml",
    "gt_poses": "poses.tum",
    "gt_matrix": "same_place.npy",
    "odometry": "odometry.tum",
    "extrinsics": "extrinsics.yaml",
}


def world_paths(folder: str | Path) -> dict[str, str]:
    """The world folder's files by argument name; a file the folder lacks is left out."""
    folder = Path(folder)
    if not (folder / "images").is_dir():
        raise SourceError(f"{folder}: no images/ folder (not an exported world?)")
    return {name: str(folder / f) for name, f in WORLD_FILES.items() if (folder / f).exists()}


def fill_world(args) -> None:
    """Set every input argument that was not given from ``args.world``'s files."""
    for name, path in world_paths(args.world).items():
        if name == "odometry" and (args.odom_drift or args.replay):
            continue  # synthesised instead of the exported one; a replay publishes no odometry
        if getattr(args, name) is None:
            setattr(args, name, [path] if name == "extrinsics" else path)


def parse_extrinsics(values: list[str]) -> np.ndarray:
    """base_T_camera from ``[file.yaml]`` or ``[x, y, z, qx, qy, qz, qw]``."""
    if len(values) == 1:
        return read_extrinsics_yaml(values[0])
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise SourceError(f"--extrinsics: not 7 numbers: {' '.join(values)}") from None
    if len(numbers) != 7:
        raise SourceError(f"--extrinsics takes a YAML file or 7 numbers, got {len(numbers)}")
    return pose_matrix(numbers[:3], numbers[3:])


def synthetic_odometry(
    source: ImageFolderSource,
    gt_camera: PoseTrack,
    base_T_camera: np.ndarray,
    yaw_deg_per_m: float,
    scale_error: float,
    max_dt: float,
) -> PoseTrack:
    """Drifting body odometry at the source's frame stamps, integrated from the ground truth."""
    camera_T_base = invert_pose(base_T_camera)
    stamps, body = [], []
    for i in range(len(source)):
        pose = gt_camera.lookup(source.stamp(i), i, max_dt)
        if pose is None:
            raise SourceError(f"--odom-drift: frame {i} has no ground-truth pose within {max_dt:g} s")
        stamps.append(source.stamp(i))
        body.append(pose @ camera_T_base)
    drift = OdometryDrift(yaw_deg_per_m, scale_error)
    label = f"odometry from {gt_camera.source}, drift {yaw_deg_per_m:g} deg/m, scale {scale_error:g}"
    return PoseTrack(integrate_odometry(np.stack(body), drift), np.asarray(stamps), label)


def open_source(args):
    """The BagSource or ImageFolderSource the arguments describe."""
    track = read_pose_file(args.gt_poses, args.gt_format) if args.gt_poses else None
    odometry = read_pose_file(args.odometry, "tum") if args.odometry else None
    extrinsics = parse_extrinsics(args.extrinsics) if args.extrinsics else None
    if args.bag:
        return BagSource(
            args.bag,
            args.image_topic,
            camera_info_topic=args.camera_info_topic,
            pose_topic=args.pose_topic,
            poses=track,
            max_pose_dt=args.gt_max_dt,
            max_frames=args.max_frames,
            odometry=odometry,
            base_T_camera=extrinsics,
        )
    k = size = None
    lens = RECTIFIED
    if args.camera_info:
        k, size = read_camera_info_yaml(args.camera_info)
        lens = read_lens_yaml(args.camera_info)
    source = ImageFolderSource(
        args.images,
        frame_period=args.frame_period,
        camera_matrix=k,
        camera_size=size,
        poses=track,
        max_pose_dt=args.gt_max_dt,
        max_frames=args.max_frames,
        depth_folder=args.depth,
        stamps_ns=read_stamps_ns(args.stamps_ns) if args.stamps_ns else None,
        odometry=odometry,
        base_T_camera=extrinsics,
        lens=lens,
    )
    if args.odom_drift:
        source.odometry = synthetic_odometry(source, track, extrinsics, *args.odom_drift, args.gt_max_dt)
    return source
