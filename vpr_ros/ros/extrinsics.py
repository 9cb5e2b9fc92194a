"""Where the camera sits on the robot: ``base_T_camera`` for a camera frame.

Order: the ``camera_extrinsics`` parameter when it is set (x y z qx qy qz qw: the camera
optical frame in ``base_frame``; a user who types it means it), else tf2 when ``tf2_ros`` is
importable (a robot with a URDF / static transform publisher), else unknown: keyframes then
carry no extrinsics and loop closures no body-frame constraint (a warning says so once).
A camera is rigidly mounted, so a transform found in tf2 is kept for that frame id.
"""

from __future__ import annotations

import math

import numpy as np

from ..geometry import is_valid_pose, pose_matrix


def extrinsics_from_parameter(values) -> np.ndarray | None:
    """[x, y, z, qx, qy, qz, qw] -> 4x4; [] -> None; ValueError for anything else."""
    values = [float(v) for v in values or []]
    if not values:
        return None
    if len(values) != 7 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"camera_extrinsics must be 7 finite numbers (x y z qx qy qz qw), got {values}")
    return pose_matrix(values[:3], values[3:])


class CameraExtrinsics:
    """Callable: ``extrinsics(camera_frame_id) -> base_T_camera | None``."""

    def __init__(self, node, base_frame: str, parameter_values=(), tf2_module=None):
        self.base_frame = base_frame
        self.log = node.get_logger()
        self.fixed = extrinsics_from_parameter(parameter_values)
        self.source = "parameter" if self.fixed is not None else ""  # "" = unknown
        self._found: dict[str, np.ndarray] = {}
        self._buffer = None
        self._warned = False
        if self.fixed is None:
            tf2 = tf2_module if tf2_module is not None else _import_tf2()
            if tf2 is not None:
                self._buffer = tf2.Buffer()
                self._listener = tf2.TransformListener(self._buffer, node)
                self.source = "tf2"
        if not self.source:
            self.log.warning(
                "no camera extrinsics (set camera_extrinsics, or install tf2_ros and publish "
                f"{base_frame} -> camera): loop closures carry no body-frame constraint"
            )

    def __call__(self, camera_frame: str) -> np.ndarray | None:
        if self.fixed is not None:
            return self.fixed
        if self._buffer is None or not camera_frame:
            return None
        if camera_frame in self._found:
            return self._found[camera_frame]
        if len(self._found) >= 16:  # a frame id per message would grow this without end
            return None
        try:
            from rclpy.time import Time

            t = self._buffer.lookup_transform(self.base_frame, camera_frame, Time()).transform
        except Exception as exc:  # not (yet) published: tf2 raises its own lookup errors
            if not self._warned:
                self.log.warn(f"tf2: no transform {self.base_frame} -> {camera_frame} yet: {exc}")
                self._warned = True
            return None
        r, p = t.rotation, t.translation
        try:
            pose = pose_matrix((p.x, p.y, p.z), (r.x, r.y, r.z, r.w))
        except ValueError:
            return None
        if not is_valid_pose(pose):
            return None
        self._found[camera_frame] = pose
        return pose


def _import_tf2():
    try:
        import tf2_ros  # noqa: PLC0415 - optional: not on PyPI; present on a ROS install
    except ImportError:
        return None
    return tf2_ros
