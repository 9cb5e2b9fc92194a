"""Ground truth from TUM / KITTI files, same-place matrices (bmp, npy) and the loop window."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from vpr_ros.evaluation.ground_truth import (
    GroundTruth,
    GroundTruthError,
    LoopWindow,
    PoseTrack,
    read_kitti,
    read_pose_file,
    read_same_place_matrix,
    read_tum,
    same_place_from_poses,
    write_tum,
)
from vpr_ros.geometry import matrix_to_quaternion, quaternion_to_matrix


def _yaw(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def test_tum_file_gives_stamped_poses_in_time_order(tmp_path):
    s = math.sqrt(0.5)
    path = tmp_path / "traj.tum"
    path.write_text(f"# timestamp tx ty tz qx qy qz qw\n2.0 1 2 3 0 0 {s} {s}\n1.0 0 0 0 0 0 0 1\n\n")
    track = read_tum(path)
    np.testing.assert_allclose(track.stamps, [1.0, 2.0])
    np.testing.assert_allclose(track.poses[1][:3, 3], [1, 2, 3])
    np.testing.assert_allclose(track.poses[1][:3, :3], _yaw(90), atol=1e-12)
    assert read_pose_file(path).source.startswith("TUM")


def test_kitti_file_gives_one_pose_per_frame_without_stamps(tmp_path):
    path = tmp_path / "00.txt"
    rows = []
    for i in range(3):
        m = np.hstack([_yaw(10 * i), [[i], [0], [2 * i]]])
        rows.append(" ".join(f"{v:.12e}" for v in m.ravel()))
    path.write_text("\n".join(rows) + "\n")
    track = read_kitti(path)
    assert track.stamps is None and len(track) == 3
    np.testing.assert_allclose(track.poses[2][:3, 3], [2, 0, 4])
    np.testing.assert_allclose(track.poses[2][:3, :3], _yaw(20), atol=1e-12)
    assert read_pose_file(path).source.startswith("KITTI")
    np.testing.assert_array_equal(track.lookup(123.0, 1, 0.1), track.poses[1])  # by index, time ignored
    assert track.lookup(0.0, 3, 0.1) is None


def test_pose_files_with_wrong_columns_are_rejected_with_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1 2 3 4 5\n")
    with pytest.raises(GroundTruthError, match="neither TUM"):
        read_pose_file(path)
    path.write_text("0 0 0 0 0 0 0 1\n1 0 0 0 0 0 1\n")
    with pytest.raises(GroundTruthError, match="line 2"):
        read_tum(path)
    path.write_text("0 0 zero 0 0 0 0 1\n")
    with pytest.raises(GroundTruthError, match=":1:"):
        read_tum(path)
    with pytest.raises(GroundTruthError, match="not found"):
        read_tum(tmp_path / "missing.tum")


def test_write_tum_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    poses = []
    for _ in range(5):
        q = rng.normal(size=4)
        m = np.eye(4)
        m[:3, :3] = quaternion_to_matrix(*q)
        m[:3, 3] = rng.normal(size=3)
        poses.append(m)
    write_tum(tmp_path / "p.tum", np.arange(5) * 0.1, poses)
    track = read_tum(tmp_path / "p.tum")
    np.testing.assert_allclose(track.poses, np.stack(poses), atol=1e-7)


def test_quaternion_conversions_are_inverse():
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q *= np.sign(q[3])
        np.testing.assert_allclose(matrix_to_quaternion(quaternion_to_matrix(*q)), q, atol=1e-9)


def test_pose_lookup_takes_the_nearest_stamp_within_tolerance():
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, 0, 3] = [0, 1, 2]
    track = PoseTrack(poses, np.array([0.0, 1.0, 2.0]))
    assert track.lookup(1.04, 0, 0.05)[0, 3] == 1
    assert track.lookup(1.96, 0, 0.05)[0, 3] == 2
    assert track.lookup(1.5, 0, 0.05) is None
    assert track.lookup(-1.0, 0, 0.05) is None


def test_same_place_from_poses_uses_radius_angle_and_skips_unknown_frames():
    def pose(x, yaw):
        m = np.eye(4)
        m[:3, :3] = _yaw(yaw)
        m[0, 3] = x
        return m

    poses = [pose(0, 0), pose(2.5, 0), pose(0.5, 180), None, pose(10, 0)]
    same, valid = same_place_from_poses(poses, radius=3.0)
    assert valid.tolist() == [True, True, True, False, True]
    assert same[1, 0] and same[2, 0] and not same[4, 0]
    assert not same[3].any() and not same[:, 3].any()
    same, _ = same_place_from_poses(poses, radius=3.0, max_angle_deg=30)
    assert same[1, 0] and not same[2, 0]  # facing the other way is not the same view
    with pytest.raises(GroundTruthError):
        same_place_from_poses(poses, radius=0)
    with pytest.raises(GroundTruthError, match="no frame has a pose"):
        GroundTruth.from_poses([None, None], 3.0, None, "poses")


def test_same_place_matrix_from_8bit_image_uses_255_only(tmp_path):
    image = np.zeros((5, 5), np.uint8)
    image[3, 0] = 255
    image[4, 1] = 254  # not 255: not the same place
    cv2.imwrite(str(tmp_path / "gt.bmp"), image)
    cv2.imwrite(str(tmp_path / "gt.png"), image)
    for name in ("gt.bmp", "gt.png"):
        matrix = read_same_place_matrix(tmp_path / name)
        assert matrix.dtype == bool and matrix.sum() == 1 and matrix[3, 0]


def test_same_place_matrix_from_npy(tmp_path):
    m = np.zeros((4, 4), bool)
    m[2, 0] = True
    np.save(tmp_path / "gt.npy", m)
    np.testing.assert_array_equal(read_same_place_matrix(tmp_path / "gt.npy"), m)
    np.save(tmp_path / "gt_int.npy", m.astype(np.uint8))
    np.testing.assert_array_equal(read_same_place_matrix(tmp_path / "gt_int.npy"), m)


def test_bad_matrices_are_rejected(tmp_path):
    np.save(tmp_path / "rect.npy", np.zeros((3, 4), bool))
    with pytest.raises(GroundTruthError, match="square"):
        read_same_place_matrix(tmp_path / "rect.npy")
    cv2.imwrite(str(tmp_path / "deep.png"), np.zeros((4, 4), np.uint16))
    with pytest.raises(GroundTruthError, match="8-bit"):
        read_same_place_matrix(tmp_path / "deep.png")
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    with pytest.raises(GroundTruthError, match="dtype"):
        read_same_place_matrix(tmp_path / "text.npy")
    with pytest.raises(GroundTruthError, match="covers 4 frames"):
        GroundTruth.from_matrix(np.zeros((4, 4), bool), 5, "m")
    assert GroundTruth.from_matrix(np.zeros((6, 6), bool), 4, "m").same_place.shape == (4, 4)


def test_loop_window_needs_every_gap():
    frames = np.array([0, 2, 4, 10, 30])
    stamps = frames * 0.5
    ranks = np.arange(5)
    w = LoopWindow(min_gap_s=4.0, min_gap_frames=5, min_gap_keyframes=2)
    ok = w.allowed(frames, stamps, ranks)
    assert ok[4, :3].all()  # 30 vs 0, 2, 4: >= 13 s, >= 26 frames, >= 2 keyframes back
    assert not ok[4, 3]  # 30 vs 10: only one keyframe back
    assert ok[3, 0] and ok[3, 1]  # 10 vs 0: 5 s, 10 frames, 3 ranks; 10 vs 2: 4 s, 8 frames, 2 ranks
    assert not ok[3, 2]  # 10 vs 4: 3 s and 6 frames, one keyframe back
    assert not LoopWindow(0.0, 25, 1).allowed(frames, stamps, ranks)[4, 3]  # 20 frames < 25
    assert not ok[2].any() and not np.triu(ok).any()  # never itself or a later frame
