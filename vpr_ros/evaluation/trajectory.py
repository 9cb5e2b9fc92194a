"""Trajectory errors with the ``evo`` library, and a before/after top-view plot.

Poses are [N, 4, 4] arrays (world_T_body). Stamps are int nanoseconds; evo wants float
seconds, so they are passed relative to the first reference stamp (exact to the ns for
spans up to ~100 days, where absolute float seconds near 1.7e9 s resolve only ~240 ns).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from evo.core import metrics, sync
from evo.core.trajectory import PoseTrajectory3D

from .plots import _pyplot

# align -> correct_scale for evo's Umeyama alignment; None: no alignment.
ALIGNMENTS = {"none": None, "se3": False, "sim3": True}


@dataclass(frozen=True)
class ApeResult:
    rmse: float  # metres, translation part
    mean: float
    median: float
    max: float
    n: int  # associated pose pairs
    align: str


def _poses(poses, name: str) -> np.ndarray:
    p = np.asarray(poses, dtype=np.float64)
    if p.ndim != 3 or p.shape[1:] != (4, 4) or len(p) == 0:
        raise ValueError(f"{name} must be a non-empty [N, 4, 4] array, got shape {p.shape}")
    return p


def _trajectory(poses: np.ndarray, stamps_ns, t0: int) -> PoseTrajectory3D:
    seconds = (np.asarray(stamps_ns, dtype=np.int64) - t0).astype(np.float64) / 1e9
    if len(seconds) != len(poses):
        raise ValueError(f"{len(poses)} poses but {len(seconds)} stamps")
    return PoseTrajectory3D(poses_se3=list(poses), timestamps=seconds)


def ape_rmse(
    reference,
    estimate,
    stamps_ns=None,
    align: str = "se3",
    estimate_stamps_ns=None,
    max_diff_ns: int = 10_000_000,
) -> ApeResult:
    """Absolute position error (evo APE, translation part) of ``estimate`` against
    ``reference``.

    Without ``estimate_stamps_ns`` the two arrays pair up index by index (``stamps_ns``,
    if given, is only checked for length). With it, ``stamps_ns`` are the reference's stamps
    and evo associates the poses nearest in time, at most ``max_diff_ns`` apart. ``align``:
    "none", "se3" (rigid Umeyama) or "sim3" (with scale), applied to the estimate.
    """
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {tuple(ALIGNMENTS)}, got {align!r}")
    ref, est = _poses(reference, "reference"), _poses(estimate, "estimate")
    if estimate_stamps_ns is None:
        if len(ref) != len(est):
            raise ValueError(f"{len(ref)} reference poses but {len(est)} estimated (pass stamps)")
        stamps = np.arange(len(ref), dtype=np.int64) if stamps_ns is None else stamps_ns
        traj_ref, traj_est = _trajectory(ref, stamps, 0), _trajectory(est, stamps, 0)
    else:
        if stamps_ns is None:
            raise ValueError("estimate_stamps_ns needs the reference's stamps_ns")
        t0 = int(np.min(stamps_ns))
        traj_ref = _trajectory(ref, stamps_ns, t0)
        traj_est = _trajectory(est, estimate_stamps_ns, t0)
        traj_ref, traj_est = sync.associate_trajectories(traj_ref, traj_est, max_diff=max_diff_ns / 1e9)
    correct_scale = ALIGNMENTS[align]
    if correct_scale is not None:
        traj_est.align(traj_ref, correct_scale=correct_scale)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((traj_ref, traj_est))
    stats = ape.get_all_statistics()
    return ApeResult(
        rmse=float(stats["rmse"]),
        mean=float(stats["mean"]),
        median=float(stats["median"]),
        max=float(stats["max"]),
        n=int(traj_ref.num_poses),
        align=align,
    )


def plot_trajectories(path_png, reference, odometry, optimized, loops=None, title: str = "") -> Path:
    """Top view (x, y) before (odometry) and after (optimized) against the reference.

    The three arrays are [N, 4, 4] with the same indexing; ``loops`` are (query, match)
    index pairs, drawn as lines between the two positions in each panel.
    """
    plt = _pyplot()
    ref = _poses(reference, "reference")[:, :3, 3]
    panels = [
        ("before: odometry", _poses(odometry, "odometry"), "#d73027"),
        ("after: optimized", _poses(optimized, "optimized"), "#2c7bb6"),
    ]
    loops = [] if loops is None else [(int(q), int(m)) for q, m in loops]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), dpi=100, sharex=True, sharey=True)
    for ax, (name, poses, color) in zip(axes, panels, strict=True):
        xyz = poses[:, :3, 3]
        ax.plot(ref[:, 0], ref[:, 1], "-", color="0.6", lw=2, label="reference")
        for i, (q, m) in enumerate(loops):
            label = f"loop closures ({len(loops)})" if i == 0 else None
            ax.plot([xyz[q, 0], xyz[m, 0]], [xyz[q, 1], xyz[m, 1]], "-", color="#1a9850", lw=0.8, label=label)
        ax.plot(xyz[:, 0], xyz[:, 1], "-", color=color, lw=1.2, label=name)
        ax.plot(ref[:1, 0], ref[:1, 1], "k^", ms=6, label="start")
        ax.set(xlabel="x [m]", ylabel="y [m]", title=name)
        ax.set_aspect("equal", adjustable="box")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path_png)
    fig.savefig(path)
    plt.close(fig)
    return path
