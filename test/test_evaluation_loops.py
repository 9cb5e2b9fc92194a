"""Loop closures as back ends use them: relative-pose errors (loops.csv), the pose-graph drift
report, the world/odometry inputs, and `evaluate --world` end to end on a small world."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from vpr_ros.evaluation.drift import drift_report, drift_report_for_run
from vpr_ros.evaluation.ground_truth import GroundTruth
from vpr_ros.evaluation.loops import loop_rows, relative_pose_summary, write_loops_csv
from vpr_ros.evaluation.run import ClosureRecord, KeyframeRecord, RunRecord, run_offline
from vpr_ros.geometry import invert_pose
from vpr_ros.types import RelativePose
from vpr_ros.world.trajectory import (
    OdometryDrift,
    Ring,
    base_T_camera,
    integrate_odometry,
    ring_trajectory,
    yaw_pose,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHORT_WINDOW = ["-p", "exclude_recent_seconds=8", "-p", "exclude_recent_keyframes=4"]


def _rot(axis, deg) -> np.ndarray:
    """3x3 rotation about a unit axis (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = math.radians(deg)
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k


def _pose(rotation, translation) -> np.ndarray:
    p = np.eye(4)
    p[:3, :3], p[:3, 3] = rotation, translation
    return p


# -- relative-pose errors ------------------------------------------------------------------


def _hand_made_run():
    """Four frames with distinct ground-truth camera poses and three closures of known error."""
    gt = {
        0: _pose(_rot((0, 0, 1), 10), (0.0, 0.0, 0.0)),
        1: _pose(_rot((0, 1, 0), -30), (1.0, 2.0, 0.5)),
        2: _pose(_rot((1, 1, 0), 25), (0.3, -0.4, 0.1)),
        3: _pose(_rot((0, 1, 1), 40), (1.5, 1.2, 0.4)),
    }
    run = RunRecord("offline", frame_stamps={i: float(i) for i in gt}, frame_poses=dict(gt))
    run.keyframes = [KeyframeRecord(id=10 + i, frame=i, stamp=float(i)) for i in gt]
    truth = {(q, m): invert_pose(gt[m]) @ gt[q] for q, m in ((2, 0), (3, 1), (3, 0))}
    cov = np.eye(6) * 1e-4
    # (2 -> 0) metric: rotation off by 3 deg, translation off by (0.03, -0.04, 0) = 5 cm.
    t20 = truth[2, 0]
    metric = RelativePose(t20[:3, :3] @ _rot((1, 0, 0), 3), t20[:3, 3] + (0.03, -0.04, 0.0), True, cov)
    # (3 -> 1) rotation-only: exact rotation, the true direction turned by 7 deg.
    t31 = truth[3, 1]
    direction = t31[:3, 3] / np.linalg.norm(t31[:3, 3])
    normal = np.cross(direction, (0.0, 0.0, 1.0))
    rot_only = RelativePose(t31[:3, :3], _rot(normal, 7) @ direction, False, cov)
    run.closures = [
        ClosureRecord(12, 10, 0.9, 50.0, relative_pose=metric, inliers=50),
        ClosureRecord(13, 11, 0.8, 40.0, relative_pose=rot_only, inliers=40),
        ClosureRecord(13, 10, 0.7, 30.0),  # accepted without a pose
    ]
    same = np.zeros((4, 4), bool)
    same[2, 0] = same[0, 2] = True  # only the first is the same place
    return run, GroundTruth.from_matrix(same, 4, "hand"), truth


def test_loop_rows_measure_known_errors(tmp_path):
    run, gt, truth = _hand_made_run()
    rows = loop_rows(run, gt)
    assert [(r["query_frame"], r["match_frame"]) for r in rows] == [(2, 0), (3, 1), (3, 0)]
    metric, rot_only, none = rows
    assert [r["pose_kind"] for r in rows] == ["metric", "rotation_only", "none"]
    assert [r["same_place"] for r in rows] == [True, False, False]

    baseline = float(np.linalg.norm(truth[2, 0][:3, 3]))
    assert metric["gt_distance_m"] == pytest.approx(baseline)
    assert metric["gt_distance_m"] == pytest.approx(np.linalg.norm(run.frame_poses[2][:3, 3]))
    assert metric["rotation_error_deg"] == pytest.approx(3.0, abs=1e-6)
    assert metric["translation_error_m"] == pytest.approx(0.05, abs=1e-9)
    assert metric["translation_error_pct"] == pytest.approx(100 * 0.05 / baseline, rel=1e-9)
    t_est = truth[2, 0][:3, 3] + (0.03, -0.04, 0.0)
    cos = t_est @ truth[2, 0][:3, 3] / (np.linalg.norm(t_est) * baseline)
    assert metric["translation_direction_error_deg"] == pytest.approx(math.degrees(math.acos(cos)), abs=1e-6)
    assert metric["inliers"] == 50 and metric["score"] == 50.0

    assert rot_only["rotation_error_deg"] == pytest.approx(0.0, abs=1e-5)
    assert rot_only["translation_direction_error_deg"] == pytest.approx(7.0, abs=1e-6)
    assert rot_only["translation_error_m"] is None and rot_only["translation_error_pct"] is None
    assert rot_only["estimated_translation_m"] is None
    assert none["rotation_error_deg"] is None and none["translation_direction_error_deg"] is None
    assert none["gt_distance_m"] == pytest.approx(np.linalg.norm(run.frame_poses[3][:3, 3]))  # frame 0 at 0

    summary = relative_pose_summary(rows)
    assert summary["pose_kinds"] == {"metric": 1, "rotation_only": 1, "none": 1}
    assert summary["errors"]["rotation_error_deg"]["n"] == 2
    assert summary["errors"]["rotation_error_deg"]["median"] == pytest.approx(1.5, abs=1e-5)
    assert summary["max_rotation_error_deg"] == pytest.approx(3.0, abs=1e-6)
    assert summary["errors"]["translation_error_m"]["median"] == pytest.approx(0.05)
    assert summary["errors_true_closures"]["translation_direction_error_deg"]["n"] == 1

    path = write_loops_csv(tmp_path / "loops.csv", rows)
    with path.open() as f:
        written = list(csv.DictReader(f))
    assert len(written) == 3 and float(written[0]["rotation_error_deg"]) == pytest.approx(3.0, abs=1e-6)
    assert written[2]["rotation_error_deg"] == "" and written[2]["pose_kind"] == "none"


def test_a_swapped_ground_truth_would_show():
    """The truth is match_T_query: the estimate of query_T_match is far off."""
    run, gt, truth = _hand_made_run()
    inverse = invert_pose(truth[2, 0])
    run.closures = [ClosureRecord(12, 10, 0.9, 50.0, relative_pose=RelativePose(
        inverse[:3, :3], inverse[:3, 3], True, np.eye(6)))]  # fmt: skip
    row = loop_rows(run, gt)[0]
    assert row["rotation_error_deg"] > 20 and row["translation_error_m"] > 0.3


# -- the pose graph before and after ---------------------------------------------------------


def _ring_closures(laps=1.6):
    """A ring walk with drifting odometry, and exact body closures from lap 2 to lap 1."""
    drift = OdometryDrift(0.6, 0.04, seed=3)
    ring = Ring()
    gt, s = ring_trajectory(ring, laps, 0.7, seed=5)
    odom = integrate_odometry(gt, drift)
    stamps = 1_700_000_000_123_456_789 + np.arange(len(gt), dtype=np.int64) * 500_000_000
    closures = []
    first = np.flatnonzero(s < ring.length)
    for q in np.flatnonzero(s >= ring.length + 2.0)[::3]:
        m = int(first[np.argmin(np.linalg.norm(gt[first, :2, 3] - gt[q, :2, 3], axis=1))])
        rel = invert_pose(gt[m]) @ gt[q]
        pose = RelativePose(rel[:3, :3], rel[:3, 3], True, np.diag([0.01**2] * 3 + [1e-3**2] * 3))
        closures.append(ClosureRecord(int(q), m, 0.9, 80.0, int(stamps[q]), int(stamps[m]), base_pose=pose))
    return stamps, gt, odom, closures


def test_drift_report_exact_closures_remove_most_of_the_drift(tmp_path):
    stamps, gt, odom, closures = _ring_closures()
    closures.append(ClosureRecord(0, 1, 0.5, 10.0, int(stamps[-1]), int(stamps[0])))  # no body pose
    report = drift_report(stamps, odom, gt, closures, plot_path=tmp_path / "trajectory.png", title="ring")
    assert report["align"] == "se3" and report["nodes"] == len(gt) == report["nodes_with_ground_truth"]
    assert report["loops_added"] == len(closures) - 1 > 5
    assert report["loops_skipped"] == 1 and report["loops_skipped_reasons"] == {"no_base_pose": 1}
    assert report["odometry_ape_rmse_m"] > 0.5
    assert report["optimized_ape_rmse_m"] < 0.25 * report["odometry_ape_rmse_m"]
    assert report["reduction_pct"] == pytest.approx(
        100 * (1 - report["optimized_ape_rmse_m"] / report["odometry_ape_rmse_m"])
    )
    assert (tmp_path / "trajectory.png").read_bytes().startswith(PNG_MAGIC)


def test_drift_report_for_run_uses_the_body_poses_under_the_camera():
    stamps, gt, odom, closures = _ring_closures(laps=1.3)
    mount = base_T_camera(pitch_deg=10.0)
    run = RunRecord("offline", base_T_camera=mount)
    for i in range(len(gt)):
        run.frame_stamps[i], run.frame_stamps_ns[i] = stamps[i] / 1e9, int(stamps[i])
        run.frame_poses[i] = gt[i] @ mount  # ground truth is of the camera
        run.frame_odometry[i] = odom[i]
    run.closures = closures
    report = drift_report_for_run(run)
    assert report == drift_report(stamps, odom, gt, closures)
    assert drift_report_for_run(RunRecord("replay")) is None  # no odometry, no report


def test_run_offline_gives_the_pipeline_the_odometry_camera_pose():
    from vpr_ros.config import load_config
    from vpr_ros.evaluation.sources import SourceFrame
    from vpr_ros.lens import Lens
    from vpr_ros.pipeline import PipelineStep

    class Recorder:
        def __init__(self):
            self.frames = []

        def process(self, frame):
            self.frames.append(frame)
            return PipelineStep("recorded")

    mount = base_T_camera()
    odom = yaw_pose(1.0, 2.0, 0.3)
    lens = Lens.from_camera_info("plumb_bob", [0.1, 0, 0, 0, 0])
    depth = np.ones((4, 6), np.float32)
    frames = [
        SourceFrame(0, 1.5, np.zeros((4, 6, 3), np.uint8), np.eye(3), yaw_pose(0, 0, 0) @ mount,
                    stamp_ns=1_500_000_001, depth=depth, lens=lens, odometry=odom, base_T_camera=mount),
        SourceFrame(1, 2.5, np.zeros((4, 6, 3), np.uint8), np.eye(3), np.eye(4)),
    ]  # fmt: skip
    recorder = Recorder()
    run = run_offline(frames, load_config(model="image"), pipeline=recorder)
    first, second = recorder.frames
    np.testing.assert_allclose(first.pose, odom @ mount)
    assert first.stamp_ns == 1_500_000_001 and first.lens == lens and first.depth is depth
    assert first.base_frame == "base_link" and first.base_T_camera is mount
    np.testing.assert_array_equal(second.pose, np.eye(4))  # no odometry: the ground truth, as before
    assert second.base_frame == "" and second.stamp_ns == 2_500_000_000
    assert run.frame_stamps_ns == {0: 1_500_000_001, 1: 2_500_000_000}
    np.testing.assert_array_equal(run.frame_poses[0], frames[0].pose)  # the record keeps the truth


# -- a small exported world, end to end ------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """1.4 laps at 1.4 m per frame, 320x240: 65 frames, revisits after ~46."""
    from vpr_ros.world.export import export_world_sequence
    from vpr_ros.world.sequence import make_world_sequence

    root = tmp_path_factory.mktemp("world")
    seq = make_world_sequence(laps=1.4, image_size=(320, 240), speed_mps=2.8, lens="plumb_bob")
    export_world_sequence(seq, root / "world")
    return root, seq


@pytest.fixture(scope="module")
def one_thread():
    import cv2
    import torch

    before = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])


def test_world_folder_source_has_depth_exact_stamps_lens_and_odometry(world):
    from vpr_ros.apps.evaluate import _parse
    from vpr_ros.evaluation.inputs import open_source

    root, seq = world
    args = _parse(["--world", str(root / "world"), "--output", str(root / "unused")])
    source = open_source(args)
    assert len(source) == len(seq) and source.lens.model == "plumb_bob"
    frames = iter(source)
    for i in (0, 1):
        f = next(frames)
        assert f.stamp_ns == int(seq.stamps_ns[i]) and f.stamp == seq.stamps[i]
        np.testing.assert_allclose(f.depth, seq.depths[i], atol=6e-4)  # millimetre PNG
        np.testing.assert_allclose(f.pose, seq.gt_camera_poses[i], atol=1e-6)
        np.testing.assert_allclose(f.odometry, seq.odom_body_poses[i], atol=1e-6)
        np.testing.assert_allclose(f.base_T_camera, seq.base_T_camera, atol=1e-9)
    assert f.lens == seq.camera.lens


def test_evaluate_world_writes_loops_and_drift(world, one_thread):
    from vpr_ros.apps.evaluate import main as evaluate_main

    root, seq = world
    out = root / "eval"
    argv = ["--world", str(root / "world"), "--model", "mobilenetv2", *SHORT_WINDOW]
    assert evaluate_main([*argv, "--output", str(out), "--no-progress", "--threads", "1"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["true_positives"] >= 10
    with (out / "loops.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == r["true_positives"] + r["false_positives"] == r["relative_pose"]["closures"]
    rel = r["relative_pose"]
    assert rel["pose_kinds"]["metric"] == len(rows)  # depth everywhere: every pose is metric
    true_errors = rel["errors_true_closures"]
    assert true_errors["rotation_error_deg"]["median"] < 1.0
    assert true_errors["translation_error_m"]["median"] < 0.1
    d = r["drift"]
    assert d["align"] == "se3" and d["nodes"] == len(seq) and d["loops_added"] == len(rows)
    assert d["optimized_ape_rmse_m"] < 0.7 * d["odometry_ape_rmse_m"]
    assert (out / "trajectory.png").read_bytes().startswith(PNG_MAGIC)
    assert r["input"]["lens"] == "plumb_bob"


def test_evaluate_world_with_synthetic_odometry_drift(world, one_thread, capsys):
    from vpr_ros.apps.evaluate import main as evaluate_main

    root, _ = world
    out = root / "eval_drift"
    argv = [
        "--world",
        str(root / "world"),
        "--model",
        "mobilenetv2",
        *SHORT_WINDOW,
        "--odom-drift",
        "0.5",
        "0.05",
    ]
    assert evaluate_main([*argv, "--output", str(out), "--no-progress", "--threads", "1", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "APE RMSE: odometry" in printed and "-> with loop closures" in printed
    r = json.loads((out / "report.json").read_text())
    assert r["input"]["odom_drift"] == [0.5, 0.05] and r["input"]["odometry"] is None
    d = r["drift"]
    exported = json.loads((root / "eval" / "report.json").read_text())["drift"]
    assert d["odometry_ape_rmse_m"] > exported["odometry_ape_rmse_m"]  # 0.5 deg/m drifts more than 0.2
    assert d["reduction_pct"] > 30 and not (out / "trajectory.png").exists()


def test_odometry_flags_are_checked(world, tmp_path):
    from vpr_ros.apps.evaluate import main as evaluate_main

    root, _ = world
    w = root / "world"
    base = [
        "--images",
        str(w / "images"),
        "--gt-matrix",
        str(w / "same_place.npy"),
        "--output",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit):  # odometry without extrinsics
        evaluate_main([*base, "--odometry", str(w / "odometry.tum")])
    with pytest.raises(SystemExit):  # synthetic drift needs ground-truth poses
        evaluate_main([*base, "--extrinsics", "0", "0", "0", "0", "0", "0", "1", "--odom-drift", "1", "0"])
    with pytest.raises(SystemExit):
        evaluate_main([*base, "--world", str(w)])  # two inputs
