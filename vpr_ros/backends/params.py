"""The pose graph's parameters: importable without GTSAM (the node parameter table reads them)."""

from __future__ import annotations

from dataclasses import dataclass

KERNELS = ("cauchy", "huber", "none")
POSE_KINDS = ("metric", "rotation_only")


@dataclass
class PoseGraphParams:
    # A new node when the body moved or turned this much, or this long, since the last node.
    node_min_translation: float = 0.25  # m
    node_min_rotation_deg: float = 10.0
    node_max_period_s: float = 1.0
    # Odometry between-factor sigmas: per metre travelled since the last node, floored.
    odom_translation_sigma_per_m: float = 0.05  # m / m
    odom_rotation_sigma_deg_per_m: float = 1.0  # deg / m
    odom_min_translation_sigma: float = 0.01  # m
    odom_min_rotation_sigma_deg: float = 0.5
    # Robust kernel on loop factors; its parameter is in sigmas of the whitened residual.
    loop_kernel: str = "cauchy"
    loop_kernel_param: float = 1.0
    # Translation sigma that leaves a rotation-only loop's translation unconstrained.
    rotation_only_translation_sigma: float = 1e3  # m
    odometry_history_capacity: int = 100_000  # odometry messages kept for loop stamp offsets
    odometry_max_gap_s: float = 0.5  # no interpolation across a larger odometry gap
    loop_stamp_tolerance_s: float = 1.0  # a loop stamp this far from every node is skipped
    relinearize_threshold: float = 0.01
    # iSAM2 takes one Gauss-Newton step per update; a loop moves the estimate far from its
    # linearisation point, so a few more steps let it (and the robust weights) settle.
    loop_extra_updates: int = 3

    def __post_init__(self):
        if self.loop_kernel not in KERNELS:
            raise ValueError(f"loop_kernel must be one of {KERNELS}, got {self.loop_kernel!r}")
        if self.loop_kernel_param <= 0 or self.rotation_only_translation_sigma <= 0:
            raise ValueError("loop_kernel_param and rotation_only_translation_sigma must be > 0")
