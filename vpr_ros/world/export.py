"""Write a ``WorldSequence`` to a folder that ``evaluate``, ``make_bag`` and other tools read.

folder/images/000000.png     colour frames, lossless
folder/depth/000000.png      uint16 depth in millimetres (0 = no surface)
folder/same_place.npy        [N, N] bool ground truth (frame indices)
folder/poses.tum             ground-truth camera (optical frame) poses, world_T_camera
folder/gt_body.tum           ground-truth body poses, world_T_base
folder/odometry.tum          drifting body odometry, odom_T_base
folder/stamps_ns.txt         one integer per frame: the exact stamps
folder/camera_info.yaml      intrinsics and distortion (camera_calibration_parsers layout)
folder/extrinsics.yaml       base_T_camera (base_link -> camera_optical_frame)
folder/sequence.yaml         generator parameters

TUM stamps are written from the integer nanoseconds (9 decimals, exact), so they parse to
the same float as ``seq.stamps``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from ..geometry import matrix_to_quaternion
from .camera import CameraSpec
from .sequence import WorldSequence

BASE_FRAME = "base_link"
CAMERA_FRAME = "camera_optical_frame"


def stamp_text(ns: int) -> str:
    """Nanoseconds -> seconds with 9 decimals, without going through a float."""
    ns = int(ns)
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    return f"{sign}{ns // 10**9}.{ns % 10**9:09d}"


def write_tum_ns(path: str | Path, stamps_ns, poses) -> None:
    """A TUM trajectory ``stamp tx ty tz qx qy qz qw`` (the layout of ``write_tum``) with exact stamps."""
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for ns, pose in zip(stamps_ns, poses, strict=True):
        pose = np.asarray(pose)
        values = [*pose[:3, 3], *matrix_to_quaternion(pose[:3, :3])]
        lines.append(stamp_text(ns) + " " + " ".join(f"{v:.9g}" for v in values))
    Path(path).write_text("\n".join(lines) + "\n")


def depth_to_png16(depth: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres (rounded); no surface, or beyond 65.535 m, -> 0."""
    mm = np.rint(np.nan_to_num(np.asarray(depth, np.float64), nan=0.0) * 1000.0)
    return np.where((mm > 0) & (mm <= 65535), mm, 0).astype(np.uint16)


def camera_info_dict(camera: CameraSpec, name: str = "camera") -> dict:
    """The camera_calibration_parsers YAML layout, with the lens's model and coefficients."""
    k = [float(v) for v in camera.K.ravel()]
    model, d = camera.lens.to_camera_info()
    p = [k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0]
    return {
        "image_width": int(camera.width),
        "image_height": int(camera.height),
        "camera_name": name,
        "camera_matrix": {"rows": 3, "cols": 3, "data": k},
        "distortion_model": model,
        "distortion_coefficients": {"rows": 1, "cols": len(d), "data": [float(c) for c in d]},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]},
        "projection_matrix": {"rows": 3, "cols": 4, "data": p},
    }


def extrinsics_dict(base_T_camera: np.ndarray) -> dict:
    qx, qy, qz, qw = matrix_to_quaternion(base_T_camera[:3, :3])
    x, y, z = (float(v) for v in base_T_camera[:3, 3])
    return {
        "parent_frame": BASE_FRAME,
        "child_frame": CAMERA_FRAME,
        "x": x,
        "y": y,
        "z": z,
        "qx": qx,
        "qy": qy,
        "qz": qz,
        "qw": qw,
    }


def export_world_sequence(seq: WorldSequence, folder: str | Path) -> dict[str, Path]:
    """Write ``seq`` into ``folder`` (created; its images/ and depth/ must be empty); returns the paths."""
    folder = Path(folder)
    paths = {
        "images": folder / "images",
        "depth": folder / "depth",
        "same_place": folder / "same_place.npy",
        "poses": folder / "poses.tum",
        "gt_body": folder / "gt_body.tum",
        "odometry": folder / "odometry.tum",
        "stamps_ns": folder / "stamps_ns.txt",
        "camera_info": folder / "camera_info.yaml",
        "extrinsics": folder / "extrinsics.yaml",
        "sequence": folder / "sequence.yaml",
    }
    for key in ("images", "depth"):
        paths[key].mkdir(parents=True, exist_ok=True)
        if any(paths[key].iterdir()):
            raise FileExistsError(f"{paths[key]} is not empty; export into a new folder")
    for i, (rgb, depth) in enumerate(zip(seq.images, seq.depths, strict=True)):
        if not cv2.imwrite(str(paths["images"] / f"{i:06d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {paths['images'] / f'{i:06d}.png'}")
        cv2.imwrite(str(paths["depth"] / f"{i:06d}.png"), depth_to_png16(depth))
    np.save(paths["same_place"], seq.same_place)
    write_tum_ns(paths["poses"], seq.stamps_ns, seq.gt_camera_poses)
    write_tum_ns(paths["gt_body"], seq.stamps_ns, seq.gt_body_poses)
    write_tum_ns(paths["odometry"], seq.stamps_ns, seq.odom_body_poses)
    paths["stamps_ns"].write_text("".join(f"{int(ns)}\n" for ns in seq.stamps_ns))
    paths["camera_info"].write_text(yaml.safe_dump(camera_info_dict(seq.camera), sort_keys=False))
    paths["extrinsics"].write_text(yaml.safe_dump(extrinsics_dict(seq.base_T_camera), sort_keys=False))
    period = float(seq.params.get("frame_period_s", 0.0))
    info = {
        "frames": len(seq),
        "frame_period_s": period,
        "first_stamp_ns": int(seq.stamps_ns[0]) if len(seq) else None,
        "depth_units": "millimetres (uint16 PNG, 0 = no surface)",
        "frame_ids": {"body": BASE_FRAME, "camera": CAMERA_FRAME},
        "generator": seq.params,
    }
    paths["sequence"].write_text(yaml.safe_dump(info, sort_keys=False))
    return paths
