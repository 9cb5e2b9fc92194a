"""A textured 3-D test world rendered exactly: corridor ring, cameras with lens models,
ground-truth trajectories with drifting odometry, and exported sequences.

    seq = make_world_sequence(laps=2, lens="plumb_bob", lookalikes=2)
    export_world_sequence(seq, "out/")

Everything is deterministic in its seed and needs no ROS (see ``python -m vpr_ros.apps.world``).
"""

from .camera import LENSES, CameraSpec, default_camera, make_camera
from .export import export_world_sequence
from .render import camera_rays, render
from .scene import Quad, Scene, make_building
from .sequence import (
    WorldSequence,
    covisibility,
    make_world_sequence,
    pose_errors,
    relative_camera_pose,
    revisit_pairs,
    same_place_matrix,
)
from .trajectory import OdometryDrift, Ring, base_T_camera, integrate_odometry, ring_trajectory

__all__ = [
    "LENSES",
    "CameraSpec",
    "OdometryDrift",
    "Quad",
    "Ring",
    "Scene",
    "WorldSequence",
    "base_T_camera",
    "camera_rays",
    "covisibility",
    "default_camera",
    "export_world_sequence",
    "integrate_odometry",
    "make_building",
    "make_camera",
    "make_world_sequence",
    "pose_errors",
    "relative_camera_pose",
    "render",
    "revisit_pairs",
    "ring_trajectory",
    "same_place_matrix",
]
