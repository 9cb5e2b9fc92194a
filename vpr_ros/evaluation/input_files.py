"""Side files of an input sequence: camera calibration, camera extrinsics, exact stamps, depth.

Layouts are those ROS tools and ``vpr_ros.world.export`` write: camera_calibration_parsers
YAML (``camera_matrix``, ``distortion_model``, ``distortion_coefficients``), extrinsics as
``x y z qx qy qz qw`` keys, one integer nanosecond stamp per line, depth as uint16 PNG in
millimetres (or float32 metres).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from ..geometry import pose_matrix
from ..image_conversion import DEFAULT_MAX_IMAGE_PIXELS, BadImageError, check_size, image_size
from ..lens import Lens


class SourceError(RuntimeError):
    """An input that cannot be read as a sequence of frames (says which and why)."""


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


def read_lens_yaml(path: str | Path) -> Lens:
    """The lens distortion (``distortion_model`` + ``distortion_coefficients.data``, or a
    top-level ``d``/``D`` list) of a ROS camera calibration YAML; rectified when absent."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    d = data.get("distortion_coefficients", data.get("d", data.get("D", ())))
    if isinstance(d, dict):
        d = d.get("data", ())
    try:
        return Lens.from_camera_info(data.get("distortion_model", ""), d or ())
    except (TypeError, ValueError) as err:
        raise SourceError(f"{path}: bad distortion: {err}") from None


def read_extrinsics_yaml(path: str | Path) -> np.ndarray:
    """base_T_camera from ``x y z qx qy qz qw`` keys (the layout world/export.py writes)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"extrinsics file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    try:
        values = [float(data[k]) for k in ("x", "y", "z", "qx", "qy", "qz", "qw")]
    except (KeyError, TypeError, ValueError):
        raise SourceError(f"{path}: extrinsics need numbers x, y, z, qx, qy, qz, qw") from None
    return pose_matrix(values[:3], values[3:])


def read_stamps_ns(path: str | Path) -> list[int]:
    """One integer nanosecond stamp per line ('#' comments and blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"stamps file not found: {path}")
    stamps = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                stamps.append(int(line))
            except ValueError:
                raise SourceError(f"{path}:{lineno}: not an integer stamp: {line[:40]!r}") from None
    return stamps


def read_depth_file(path: Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """A depth image -> HxW float32 metres: uint16 is millimetres, float is metres; 0 = none."""
    data = path.read_bytes()
    check_size(*image_size(data), max_pixels)  # before decoding, like colour images
    depth = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if depth is None or depth.ndim != 2:
        raise BadImageError("corrupt_compressed", f"{path}: not a single-channel depth image")
    if depth.dtype == np.uint16:
        depth = depth.astype(np.float32) * 1e-3
    elif depth.dtype == np.float32:
        depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    else:
        raise BadImageError(
            "unknown_encoding", f"{path}: depth must be uint16 mm or float32 m, got {depth.dtype}"
        )
    return depth


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
