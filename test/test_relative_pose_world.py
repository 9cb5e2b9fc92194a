"""Relative poses on the rendered 3-D world, against its exact ground truth.

Lens models: the verifier's pose on distorted images (plumb_bob, rational_polynomial,
equidistant) is within 10 % of its pose on the same places seen by a rectified camera, and
ignoring the distortion is far worse (so the comparison can fail). Planar scenes without
depth give no pose instead of a wrong one; odometry gives metric scale without depth.
"""

import functools

import numpy as np
import pytest

from vpr_ros.geometry import invert_pose
from vpr_ros.rerank.geometric import Camera, GeometricVerifier
from vpr_ros.types import Candidate, Keyframe
from vpr_ros.world import (
    Ring,
    base_T_camera,
    make_building,
    make_camera,
    pose_errors,
    render,
    ring_trajectory,
)

PAIRS = 8


@functools.cache
def _revisits():
    """(query pose, match pose) camera poses: lap-2 frames and the nearest lap-1 frame."""
    scene = make_building(seed=7)
    width, outer = scene.params["corridor_width"], scene.params["outer_size"]
    ring = Ring(outer[0] / 2 - width / 2, outer[1] / 2 - width / 2)
    body, distance = ring_trajectory(ring, 2.0, 0.7, seed=7)
    cams = body @ base_T_camera()
    lap = np.floor(distance / ring.length + 1e-9).astype(int)
    first, later = np.flatnonzero(lap == 0), np.flatnonzero(lap == 1)
    pairs = []
    for q in later[np.linspace(5, len(later) - 5, PAIRS).astype(int)]:
        m = first[np.argmin(np.linalg.norm(cams[first, :3, 3] - cams[q, :3, 3], axis=1))]
        pairs.append((cams[q], cams[m]))
    return scene, pairs


@functools.cache
def _errors(lens: str, use_lens: bool = True, depth: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(rotation errors deg, translation errors m) over the revisit pairs with this lens."""
    scene, pairs = _revisits()
    camera = make_camera(lens)
    cam = Camera(camera.K, camera.lens if use_lens else Camera(camera.K).lens)
    verifier = GeometricVerifier()
    rot, trans = [], []
    for pose_q, pose_m in pairs:
        (img_q, z_q), (img_m, z_m) = render(scene, camera, pose_q), render(scene, camera, pose_m)
        fq = verifier.features(img_q, z_q if depth else None)
        fm = verifier.features(img_m, z_m if depth else None)
        _, passed, reason, pose = verifier.verify_pair(fq, fm, img_q.shape[:2], cam, cam)
        assert passed, reason
        if pose is None:
            continue
        r, t, _ = pose_errors(pose.rotation, pose.translation, invert_pose(pose_m) @ pose_q)
        rot.append(r)
        trans.append(t)
    return np.array(rot), np.array(trans)


@pytest.mark.parametrize("lens", ["plumb_bob", "rational_polynomial", "equidistant"])
def test_distorted_cameras_give_poses_as_good_as_a_rectified_one(lens):
    rot_ref, trans_ref = _errors("")
    rot, trans = _errors(lens)
    assert len(rot) == len(rot_ref) == PAIRS
    # Within 10 % of the rectified camera's errors (plus a floor for the rectified camera's
    # own noise: its median errors are ~0.04 deg and ~3 mm here).
    assert np.median(rot) <= 1.1 * np.median(rot_ref) + 0.01, (np.median(rot), np.median(rot_ref))
    assert np.median(trans) <= 1.1 * np.median(trans_ref) + 0.002, (np.median(trans), np.median(trans_ref))
    assert rot.max() < 0.5


def test_ignoring_the_distortion_biases_the_pose():
    rot_ref, trans_ref = _errors("")
    _, trans = _errors("plumb_bob", use_lens=False)
    assert np.median(trans) > 3 * np.median(trans_ref) + 0.01


def test_planar_views_without_depth_give_no_pose_rather_than_a_wrong_one():
    rot, _ = _errors("", depth=False)
    assert len(rot) < PAIRS  # some views are one wall: no pose
    assert len(rot) >= PAIRS // 2 and rot.max() < 2.0, rot


def test_odometry_gives_metric_scale_without_depth():
    """The query's keypoints are triangulated against the previous keyframe (0.7 m back along
    the path, from exact odometry): PnP then gives a metric pose without any depth image."""
    scene = make_building(seed=7)
    width, outer = scene.params["corridor_width"], scene.params["outer_size"]
    ring = Ring(outer[0] / 2 - width / 2, outer[1] / 2 - width / 2)
    body, distance = ring_trajectory(ring, 2.0, 0.7, seed=7)
    cams = body @ base_T_camera()
    camera = make_camera("")
    lap = np.floor(distance / ring.length + 1e-9).astype(int)
    first = np.flatnonzero(lap == 0)
    errors = []
    for q in (np.flatnonzero(lap == 1)[[10, 40, 70]]).tolist():
        m = int(first[np.argmin(np.linalg.norm(cams[first, :3, 3] - cams[q, :3, 3], axis=1))])
        verifier = GeometricVerifier()
        keyframes = {}
        for i in (m, q - 1, q):
            image, _ = render(scene, camera, cams[i])
            keyframes[i] = Keyframe(
                i, float(i), np.zeros(4), image=image, camera_matrix=camera.K, pose=cams[i]
            )
        verifier.add_keyframe(keyframes[m])
        verifier.add_keyframe(keyframes[q - 1])
        verifier.add_keyframe(keyframes[q])
        (v,) = verifier.verify(keyframes[q], [Candidate(m, float(m), 0.9)])
        assert v.passed and v.relative_pose is not None and v.relative_pose.metric, v.reason
        truth = invert_pose(cams[m]) @ cams[q]
        _, t_err, _ = pose_errors(v.relative_pose.rotation, v.relative_pose.translation, truth)
        errors.append(t_err / np.linalg.norm(truth[:3, 3]))
    assert np.median(errors) < 0.05, errors
