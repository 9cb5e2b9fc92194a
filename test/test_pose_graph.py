"""The GTSAM iSAM2 pose graph: drift correction on a synthetic two-lap path, robust kernel,
rotation-only loops, covariance order, and how loop stamps map to graph nodes."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

pytest.importorskip("gtsam")

from vpr_ros.backends.pose_graph import (  # noqa: E402
    PoseGraph,
    PoseGraphParams,
    covariance_ros_to_gtsam,
    information_matrix,
)

T0 = 1_700_000_000_000_000_000  # ns
DT = 200_000_000  # one pose every 0.2 s (0.2 m at 1 m/s)
LOOP_COV = np.diag([0.1**2] * 3 + [math.radians(1.0) ** 2] * 3)  # ROS order: x y z rx ry rz
WRONG_AT = 450  # the odometry index (mid lap 2) that gets the one grossly wrong closure


def _yaw(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _pose(rotation=None, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.eye(3) if rotation is None else rotation
    m[:3, 3] = translation
    return m


def _chain(start: np.ndarray, increments) -> np.ndarray:
    poses = [start]
    for d in increments:
        poses.append(poses[-1] @ d)
    return np.array(poses)


@functools.lru_cache(maxsize=1)
def _scenario():
    """Two laps of a ~20 m x 10 m rounded rectangle, 0.2 m steps (300 per lap); odometry
    with a 0.3 deg/m yaw bias and a 3 % scale error."""
    step, turn = _pose(translation=(0.2, 0.0, 0.0)), _pose(_yaw(math.pi / 16), (0.2, 0.0, 0.0))
    lap = ([step] * 92 + [turn] * 8 + [step] * 42 + [turn] * 8) * 2
    gt = _chain(np.eye(4), lap * 2)
    odom_increments = [
        _pose(d[:3, :3] @ _yaw(math.radians(0.3) * 0.2), 1.03 * d[:3, 3])
        for d in (np.linalg.inv(a) @ b for a, b in zip(gt[:-1], gt[1:], strict=True))
    ]
    return gt, _chain(gt[0], odom_increments), len(lap)


def _stamp(i: int) -> int:
    return T0 + i * DT


def _index(stamp_ns: int) -> int:
    return (stamp_ns - T0) // DT


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((a[:, :3, 3] - b[:, :3, 3]) ** 2, axis=1))))


def _heading_rmse_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = [(np.trace(x[:3, :3].T @ y[:3, :3]) - 1) / 2 for x, y in zip(a, b, strict=True)]
    return math.degrees(float(np.sqrt(np.mean(np.arccos(np.clip(cos, -1, 1)) ** 2))))


@functools.cache
def _run(kernel="cauchy", wrong=False, kind="metric", cov_key="ros", garbage_translation=0.0):
    """Feed the scenario; every 5th pose of lap 2 closes a loop to lap 1 three poses later
    along the path (ground-truth relative pose, 0.03 m / 0.5 deg noise, fixed seed)."""
    gt, odom, per_lap = _scenario()
    cov = {
        "ros": LOOP_COV,
        "rot_tight": np.diag([100.0] * 3 + [1e-6] * 3),  # ROS order: loose x y z, tight rx ry rz
        "rot_tight_swapped": np.diag([1e-6] * 3 + [100.0] * 3),  # the same in GTSAM order
    }[cov_key]
    rng, garbage_rng = np.random.default_rng(0), np.random.default_rng(1)  # same noise in every run
    graph = PoseGraph(PoseGraphParams(loop_kernel=kernel))
    for i in range(len(gt)):
        graph.add_odometry(_stamp(i), odom[i])
        if i > per_lap + 10 and i % 5 == 0:
            j = i - per_lap + 3
            rel = (
                np.linalg.inv(gt[j])
                @ gt[i]
                @ _pose(_yaw(rng.normal(0, math.radians(0.5))), rng.normal(0, 0.03, 3))
            )
            if garbage_translation:
                rel[:3, 3] = garbage_rng.normal(0.0, garbage_translation, 3)
            assert graph.add_loop(_stamp(i), _stamp(j), rel, cov, kind).added
        if wrong and i == WRONG_AT:
            j = i - per_lap + 40  # a place 8 m further along lap 1, and then 8 m / 90 deg off
            rel = np.linalg.inv(gt[j]) @ gt[i] @ _pose(_yaw(math.pi / 2), (8.0, 0.0, 0.0))
            assert graph.add_loop(_stamp(i), _stamp(j), rel, LOOP_COV, "metric").added
    optimized = graph.optimized_poses()
    reference = gt[[_index(s) for s, _ in optimized]]
    estimate = np.array([m for _, m in optimized])
    odometry = np.array([m for _, m in graph.odometry_poses()])
    return reference, odometry, estimate, graph


def test_loops_cut_the_drift_of_two_laps():
    reference, odometry, estimate, graph = _run()
    before, after = _rmse(reference, odometry), _rmse(reference, estimate)
    print(f"APE RMSE odometry {before:.2f} m -> optimized {after:.2f} m; {graph.diagnostics()}")
    assert before > 2.5  # the scenario really drifts by metres
    assert after <= 0.4 * before
    assert _heading_rmse_deg(reference, estimate) < 0.2 * _heading_rmse_deg(reference, odometry)
    d = graph.diagnostics()
    assert d["nodes"] == len(estimate) > 300 and d["loops_added"] == 58 and d["loops_skipped"] == {}
    # map_T_odom carries the latest odometry pose onto the latest optimised node.
    assert np.allclose(graph.map_T_odom() @ odometry[-1], estimate[-1], atol=1e-9)


@pytest.mark.parametrize("kernel, max_shift", [("cauchy", 0.05), ("huber", 0.3)])
def test_a_robust_kernel_shrugs_off_one_grossly_wrong_loop(kernel, max_shift):
    reference, _, clean, _ = _run(kernel)
    _, _, corrupted, _ = _run(kernel, wrong=True)
    shift = np.linalg.norm(corrupted[:, :3, 3] - clean[:, :3, 3], axis=1).max()
    print(f"{kernel}: one wrong loop moves the trajectory by at most {shift:.3f} m")
    assert shift < max_shift
    assert _rmse(reference, corrupted) < _rmse(reference, clean) + 0.1


def test_without_a_kernel_one_wrong_loop_bends_the_trajectory():
    reference, _, clean, _ = _run("none")
    _, _, corrupted, _ = _run("none", wrong=True)
    shift = np.linalg.norm(corrupted[:, :3, 3] - clean[:, :3, 3], axis=1).max()
    print(f"none: one wrong loop moves the trajectory by up to {shift:.2f} m")
    assert shift > 2.0
    assert _rmse(reference, corrupted) > _rmse(reference, clean) + 0.5


def test_rotation_only_loops_fix_heading_without_forcing_translation():
    reference, odometry, estimate, _ = _run(kind="rotation_only")
    _, _, garbage, _ = _run(kind="rotation_only", garbage_translation=5.0)
    assert _heading_rmse_deg(reference, estimate) < 0.2 * _heading_rmse_deg(reference, odometry)
    assert _rmse(reference, estimate) < 0.5 * _rmse(reference, odometry)
    # Random 5 m translations in the same loops change nothing: only rotation constrains.
    assert np.abs(garbage[:, :3, 3] - estimate[:, :3, 3]).max() < 0.01


def test_loop_covariance_is_read_in_ros_order():
    # Tight rotation, loose (10 m) translation, and the translations are random 3 m
    # garbage: in ROS order the loops fix heading; read as GTSAM order they would pin the
    # garbage translations and leave the heading free.
    reference, odometry, estimate, _ = _run(cov_key="rot_tight", garbage_translation=3.0)
    assert _heading_rmse_deg(reference, estimate) < 0.2 * _heading_rmse_deg(reference, odometry)
    assert _rmse(reference, estimate) < 0.5 * _rmse(reference, odometry)
    # The check discriminates: the same matrix in the other order does not fix the heading.
    _, _, swapped, _ = _run(cov_key="rot_tight_swapped", garbage_translation=3.0)
    assert _heading_rmse_deg(reference, swapped) > 0.5 * _heading_rmse_deg(reference, odometry)


def test_covariance_ros_to_gtsam_swaps_the_blocks():
    ros = np.arange(36, dtype=float).reshape(6, 6)
    g = covariance_ros_to_gtsam(ros)
    assert np.array_equal(g[:3, :3], ros[3:, 3:]) and np.array_equal(g[3:, 3:], ros[:3, :3])
    assert np.array_equal(g[:3, 3:], ros[3:, :3]) and np.array_equal(g[3:, :3], ros[:3, 3:])
    assert np.array_equal(covariance_ros_to_gtsam(g), ros)  # the swap is its own inverse


def test_information_matrix_is_finite_for_singular_and_huge_covariances():
    cov = np.diag([0.01, 0.04, 0.09, 1e-4, 4e-4, 9e-4])
    assert np.allclose(information_matrix(cov), np.linalg.inv(cov))
    singular = np.diag([0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    huge = np.diag([1e30, np.inf, np.nan, 1.0, 1.0, 1.0])
    for c in (singular, huge, np.zeros((6, 6))):
        info = information_matrix(c)
        assert np.all(np.isfinite(info)) and np.allclose(info, info.T)
        assert np.all(np.linalg.eigvalsh(info) > 0)
    assert information_matrix(singular)[0, 0] == pytest.approx(1e9)
    assert information_matrix(huge)[1, 1] < 1e-11 and information_matrix(huge)[2, 2] < 1e-11


# -- stamps -> nodes ------------------------------------------------------------------------


def _straight_graph(n=11, capacity=1000, **params) -> tuple[PoseGraph, np.ndarray]:
    """Odometry every 0.1 s along x (0.1 m) turning 2 deg per step; nodes every 0.3 m."""
    params.setdefault("node_min_translation", 0.25)
    graph = PoseGraph(PoseGraphParams(odometry_history_capacity=capacity, **params))
    odom = _chain(np.eye(4), [_pose(_yaw(math.radians(2.0)), (0.1, 0.0, 0.0))] * (n - 1))
    for i, m in enumerate(odom):
        graph.add_odometry(T0 + i * 100_000_000, m)
    return graph, odom


def test_node_spacing_policy():
    graph, _ = _straight_graph()
    assert [s for s, _ in graph.odometry_poses()] == [T0 + k * 300_000_000 for k in range(4)]
    turning = PoseGraph(PoseGraphParams(node_min_rotation_deg=10.0))
    for i in range(5):  # turning on the spot 6 deg a step: a node every 2nd step
        turning.add_odometry(T0 + i * 10_000_000, _pose(_yaw(math.radians(6.0 * i))))
    assert turning.diagnostics()["nodes"] == 3
    waiting = PoseGraph(PoseGraphParams(node_max_period_s=1.0))
    for i in range(6):  # standing still, 0.5 s apart: a node every second
        waiting.add_odometry(T0 + i * 500_000_000, np.eye(4))
    assert waiting.diagnostics()["nodes"] == 3


def test_loop_at_node_stamps_uses_those_nodes_unchanged():
    graph, odom = _straight_graph()
    rel = np.linalg.inv(odom[0]) @ odom[9]
    result = graph.add_loop(T0 + 900_000_000, T0, rel, LOOP_COV)
    assert (result.added, result.query_node, result.match_node) == (True, 3, 0)
    assert np.array_equal(result.between, rel)
    # A loop that agrees with odometry leaves the graph where odometry put it.
    for (_, est), (_, raw) in zip(graph.optimized_poses(), graph.odometry_poses(), strict=True):
        assert np.allclose(est, raw, atol=1e-6)


def test_off_node_stamps_use_the_interpolated_odometry_offset():
    graph, odom = _straight_graph()
    query, match = T0 + 850_000_000, T0 + 50_000_000  # halfway between messages 8|9 and 0|1

    def interpolated(i):  # the halfway pose between messages i and i + 1, by hand
        return _pose(_yaw(math.radians(2.0 * i + 1.0)), 0.5 * (odom[i][:3, 3] + odom[i + 1][:3, 3]))

    rel = np.linalg.inv(interpolated(0)) @ interpolated(8)
    result = graph.add_loop(query, match, rel, LOOP_COV)
    assert (result.added, result.query_node, result.match_node) == (True, 3, 0)  # nodes 0.9 s, 0 s
    node_T_query = np.linalg.inv(odom[9]) @ interpolated(8)
    node_T_match = np.linalg.inv(odom[0]) @ interpolated(0)
    expected = node_T_match @ rel @ np.linalg.inv(node_T_query)
    assert np.allclose(result.between, expected, atol=1e-12)
    assert np.allclose(result.between, np.linalg.inv(odom[0]) @ odom[9], atol=1e-12)
    for (_, est), (_, raw) in zip(graph.optimized_poses(), graph.odometry_poses(), strict=True):
        assert np.allclose(est, raw, atol=1e-6)


def test_unusable_loop_stamps_are_skipped_with_a_reason():
    graph, odom = _straight_graph(n=31, capacity=10, loop_stamp_tolerance_s=0.2)  # keeps msgs 21..30
    rel = np.eye(4)
    # A node stamp needs no history, even long after its odometry has been dropped.
    assert graph.add_loop(T0 + 3_000_000_000, T0, rel, LOOP_COV).added
    cases = {
        (T0 + 3_000_000_000, T0 + 50_000_000): "match_before_odometry_history",
        (T0 + 3_050_000_000, T0): "query_after_odometry",
        (T0 + 3_000_000_000, T0 + 2_950_000_000): "same_node",
    }
    for (query, match), reason in cases.items():
        result = graph.add_loop(query, match, rel, LOOP_COV)
        assert (result.added, result.reason) == (False, reason)
    assert graph.add_loop(T0 + 3_000_000_000, T0, np.zeros((4, 4)), LOOP_COV).reason == "invalid_pose"
    assert graph.add_loop(T0 + 3_000_000_000, T0, rel, np.full((6, 6), np.nan)).reason == "invalid_covariance"
    with pytest.raises(ValueError):
        graph.add_loop(T0 + 3_000_000_000, T0, rel, LOOP_COV, "metric_ish")
    sparse = PoseGraph(PoseGraphParams(loop_stamp_tolerance_s=0.2, odometry_max_gap_s=5.0))
    sparse.add_odometry(T0, np.eye(4))
    sparse.add_odometry(T0 + 2_000_000_000, _pose(translation=(1.0, 0.0, 0.0)))  # one node each
    assert sparse.add_loop(T0 + 1_000_000_000, T0, rel, LOOP_COV).reason == "query_no_node_near_stamp"
    skipped = graph.diagnostics()["loops_skipped"]
    assert skipped == {
        "match_before_odometry_history": 1,
        "query_after_odometry": 1,
        "same_node": 1,
        "invalid_pose": 1,
        "invalid_covariance": 1,
    }


def test_bad_parameters_and_odometry():
    with pytest.raises(ValueError):
        PoseGraphParams(loop_kernel="tukey")
    graph = PoseGraph()
    assert np.array_equal(graph.map_T_odom(), np.eye(4)) and graph.optimized_poses() == []
    assert not graph.add_odometry(T0, np.full((4, 4), np.nan))
    assert graph.add_odometry(T0, np.eye(4)) and not graph.add_odometry(T0 - 1, np.eye(4))
    d = graph.diagnostics()
    assert (d["nodes"], d["odometry_invalid"], d["odometry_late"], d["history"]) == (1, 1, 1, 2)
