"""Trajectory APE through evo, and the before/after plot."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("evo")

from vpr_ros.evaluation.trajectory import ape_rmse, plot_trajectories  # noqa: E402

T0 = 1_700_000_000_000_000_000  # ns


def _path(n=50) -> np.ndarray:
    """A quarter-circle-ish 3D path with turning orientation (not degenerate for Umeyama)."""
    poses = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        a = 0.05 * i
        poses[i, :3, :3] = [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]
        poses[i, :3, 3] = (5 * math.sin(a), 5 * (1 - math.cos(a)), 0.02 * i)
    return poses


def test_identical_trajectories_have_zero_error():
    ref = _path()
    for align in ("none", "se3", "sim3"):
        result = ape_rmse(ref, ref.copy(), align=align)
        assert result.rmse == pytest.approx(0.0, abs=1e-9) and result.n == len(ref) and result.align == align


def test_constant_offset_is_the_rmse_unaligned_and_vanishes_aligned():
    ref = _path()
    est = ref.copy()
    est[:, :3, 3] += (0.3, -0.4, 0.0)  # 0.5 m everywhere
    none = ape_rmse(ref, est, align="none")
    assert (
        none.rmse == pytest.approx(0.5)
        and none.median == pytest.approx(0.5)
        and none.max == pytest.approx(0.5)
    )
    assert ape_rmse(ref, est, align="se3").rmse == pytest.approx(0.0, abs=1e-9)


def test_linear_drift_against_a_hand_computation():
    # Error grows as 0.01 m per pose along y: e_i = 0.01 i, RMSE = 0.01 sqrt(mean(i^2)).
    n = 101
    ref = _path(n)
    est = ref.copy()
    est[:, 1, 3] += 0.01 * np.arange(n)
    expected = 0.01 * math.sqrt(sum(i * i for i in range(n)) / n)
    result = ape_rmse(ref, est, align="none")
    assert result.rmse == pytest.approx(expected, rel=1e-12)
    assert result.median == pytest.approx(0.5) and result.max == pytest.approx(1.0)
    assert result.mean == pytest.approx(0.5)
    assert ape_rmse(ref, est, align="se3").rmse < result.rmse  # alignment takes some of it out


def test_stamps_associate_nearest_poses_within_max_diff():
    ref = _path(20)
    ref_stamps = T0 + np.arange(20, dtype=np.int64) * 100_000_000
    # The estimate at every other reference stamp, 1 ms late, and one pose far off in time.
    est = ref[::2].copy()
    est[:, :3, 3] += (0.0, 0.0, 0.2)
    est_stamps = ref_stamps[::2] + 1_000_000
    est_stamps[-1] += 40_000_000  # 41 ms: beyond max_diff, left out
    result = ape_rmse(
        ref, est, ref_stamps, align="none", estimate_stamps_ns=est_stamps, max_diff_ns=5_000_000
    )
    assert result.n == 9 and result.rmse == pytest.approx(0.2)
    with pytest.raises(ValueError):
        ape_rmse(ref, est, align="none")  # different lengths need stamps
    with pytest.raises(ValueError):
        ape_rmse(ref, ref, align="umeyama")


def test_plot_writes_a_png(tmp_path):
    ref = _path()
    odom = ref.copy()
    odom[:, 1, 3] += 0.02 * np.arange(len(ref))
    path = plot_trajectories(tmp_path / "traj.png", ref, odom, ref, loops=[(45, 5), (40, 2)], title="test")
    assert path == tmp_path / "traj.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
