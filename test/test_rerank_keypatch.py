"""Key-patch RANSAC re-ranker: official TransVPR matches through the class, known homographies,
other models' patch tokens, rejections, and the descriptor-stage wiring with a real TransVPR."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from parity import load_fixture, save_official_checkpoint
from vpr_ros.config import PipelineConfig
from vpr_ros.encoder import Encoder
from vpr_ros.feature_store import FeatureStore
from vpr_ros.pipeline import DescriptorStage, VerificationStage
from vpr_ros.rerank import keyframe_local_features, needed_local_features
from vpr_ros.rerank.keypatch import KeyPatchReranker, patch_centres
from vpr_ros.types import Candidate, Frame, Keyframe


def _kf(kf_id: int, local: dict) -> Keyframe:
    return Keyframe(kf_id, float(kf_id), np.zeros(4, np.float32), local_features=local)


def _feats(local: dict) -> dict:
    """Keyframe local features -> what KeyPatchReranker.verify_pair matches."""
    feats, problem = KeyPatchReranker.patch_features(_kf(0, local))
    assert feats is not None, problem
    return feats


@pytest.fixture(scope="module")
def transvpr_fixture(parity_dir, tmp_path_factory):
    folder = parity_dir / "transvpr"
    fixture = load_fixture(folder)
    path = save_official_checkpoint(fixture, tmp_path_factory.mktemp("transvpr"))
    return folder, fixture, path


@pytest.fixture(scope="module")
def transvpr_encoder(transvpr_fixture):
    _, _, path = transvpr_fixture
    return Encoder("transvpr", weights=str(path), device="cpu")


def test_official_pair_matches_through_the_reranker(transvpr_fixture, transvpr_encoder):
    folder, fixture, _ = transvpr_fixture
    case = next(c for c in fixture["cases"] if c["name"] == "pair_ab")
    images = np.concatenate([np.load(folder / case["inputs"][k]) for k in ("img_a", "img_b")])
    model = transvpr_encoder.model
    import torch

    with torch.inference_mode():
        out = {k: v.numpy() for k, v in model.extract(torch.from_numpy(images)).items()}
    names = needed_local_features("keypatch", transvpr_encoder.spec.local_features)
    assert names == ("patch_tokens", "attention")
    per_image = [
        keyframe_local_features(
            names, {k: (v if k == "grid" else v[i : i + 1]) for k, v in out.items()}, (480, 640)
        )
        for i in range(2)
    ]
    np.testing.assert_array_equal(per_image[0]["patch_grid"], [30, 40, 480, 640])

    reranker = KeyPatchReranker()
    query, db = _kf(1, per_image[0]), _kf(0, per_image[1])  # A is the query, B the database image
    reranker.add_keyframe(db)
    reranker.add_keyframe(query)
    feats_q, _ = reranker.patch_features(query)
    feats_db = reranker.store.get(0)
    pairs = reranker.match_patches(feats_q, feats_db)
    np.testing.assert_array_equal(pairs, np.load(folder / "pair_ab_mutual_nn_pairs.npy"))
    result = reranker.verify_pair(feats_q, feats_db)
    assert result.matches == int(np.load(folder / "pair_ab_num_mutual_nn.npy").ravel()[0])

    # The geometric step as the official code writes it (§5.5): int patch centres, 24 px.
    xs = np.linspace(8, 640 - 8, 40).astype(int)
    ys = np.linspace(8, 480 - 8, 30).astype(int)
    centres = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.float32)
    np.testing.assert_array_equal(patch_centres(feats_q["patch_grid"]), centres)
    _, mask = cv2.findHomography(centres[pairs[:, 0]], centres[pairs[:, 1]], cv2.RANSAC, 16 * 1.5)
    official_inliers = 0 if mask is None else int(mask.sum())
    assert result.inliers == official_inliers, (result.inliers, official_inliers)
    assert 4 <= official_inliers <= result.matches
    (verdict,) = reranker.verify(query, [Candidate(0, 0.0, 0.5)])
    assert verdict.score == official_inliers and verdict.inliers == official_inliers


# -- synthetic patch tokens under a known homography ------------------------------------------------


def _shifted_grid_pair(rows, cols, dim, dy, dx, size, seed=0, attention=True):
    """Query tokens, and database tokens of the same scene moved by (dy, dx) patches."""
    rng = np.random.default_rng(seed)
    scene = rng.standard_normal((rows + abs(dy), cols + abs(dx), dim)).astype(np.float32)
    q = scene[:rows, :cols]
    db = scene[dy : dy + rows, dx : dx + cols] + 0.05 * rng.standard_normal((rows, cols, dim)).astype(
        np.float32
    )
    grid = np.array([rows, cols, *size], np.float32)
    local_q = {"patch_tokens": q.reshape(-1, dim), "patch_grid": grid}
    local_db = {"patch_tokens": db.reshape(-1, dim), "patch_grid": grid}
    if attention:
        local_q["attention"] = np.ones(rows * cols, np.float32)
        local_db["attention"] = np.ones(rows * cols, np.float32)
    return local_q, local_db


def test_known_translation_homography_is_recovered_from_patch_matches():
    local_q, local_db = _shifted_grid_pair(30, 40, 64, dy=2, dx=3, size=(480, 640))
    reranker = KeyPatchReranker()
    result = reranker.verify_pair(_feats(local_q), _feats(local_db))
    overlap = (30 - 2) * (40 - 3)
    assert result.matches >= 0.95 * overlap and result.inliers >= 0.95 * overlap
    # db patch (r, c) shows query patch (r + 2, c + 3): query pixels move by (-3, -2) patches.
    want = np.array([[1, 0, -3 * 16], [0, 1, -2 * 16], [0, 0, 1]], np.float64)
    np.testing.assert_allclose(result.homography / result.homography[2, 2], want, atol=0.05)


def test_image_patch_tokens_without_attention_use_every_patch_and_their_own_grid():
    names = needed_local_features("keypatch", ("patch_tokens",))
    assert names == ("patch_tokens",)
    # ImAge at 322x322: 23x23 patches of 14 px, no attention map.
    local_q, local_db = _shifted_grid_pair(23, 23, 48, dy=1, dx=2, size=(322, 322), attention=False)
    reranker = KeyPatchReranker(min_inliers=100)
    reranker.add_keyframe(_kf(0, local_db))
    query = _kf(1, local_q)
    (v,) = reranker.verify(query, [Candidate(0, 0.0, 0.4)])
    assert v.passed and v.inliers >= 0.95 * 22 * 21, v.reason
    np.testing.assert_allclose(patch_centres(local_q["patch_grid"])[:2], [[7, 7], [21, 7]])


def test_pairvpr_dense_tokens_are_patch_tokens_too():
    assert needed_local_features("keypatch", ("dense",)) == ("dense",)
    local_q, local_db = _shifted_grid_pair(23, 23, 32, dy=0, dx=1, size=(322, 322), attention=False)
    local_q = {"dense": local_q["patch_tokens"], "patch_grid": local_q["patch_grid"]}
    local_db = {"dense": local_db["patch_tokens"], "patch_grid": local_db["patch_grid"]}
    reranker = KeyPatchReranker()
    reranker.add_keyframe(_kf(0, local_db))
    (v,) = reranker.verify(_kf(1, local_q), [Candidate(0, 0.0, 0.4)])
    assert v.passed and v.inliers > 400


def test_low_attention_patches_are_not_key_patches():
    local_q, local_db = _shifted_grid_pair(30, 40, 64, dy=0, dx=0, size=(480, 640))
    local_q["attention"] = np.zeros(1200, np.float32)
    local_q["attention"][:3] = 1.0  # only three key patches in the query
    reranker = KeyPatchReranker()
    result = reranker.verify_pair(_feats(local_q), _feats(local_db))
    assert result.inliers == 0 and result.matches < 4 and "too few mutual patch matches" in result.reason


def test_fp16_store_and_spill_give_the_same_score(tmp_path):
    local_q, local_db = _shifted_grid_pair(30, 40, 64, dy=1, dx=1, size=(480, 640), seed=4)
    exact = KeyPatchReranker()
    exact.add_keyframe(_kf(0, local_db))
    (ref,) = exact.verify(_kf(1, local_q), [Candidate(0, 0.0, 0.5)])
    store = FeatureStore(ram_budget_bytes=0, spill_dir=str(tmp_path), float16=True)
    small = KeyPatchReranker(feature_store=store)
    small.add_keyframe(_kf(0, local_db))
    small.add_keyframe(_kf(5, local_q))  # pushes keyframe 0 to disk
    assert store.num_spilled == 1 and store.get(0)["tokens"].dtype == np.float16
    assert store.get(0)["patch_grid"].dtype == np.float32
    (got,) = small.verify(_kf(1, local_q), [Candidate(0, 0.0, 0.5)])
    assert got.inliers == pytest.approx(ref.inliers, abs=5)


def test_keyframes_without_usable_patch_tokens_are_rejected_with_a_reason():
    reranker = KeyPatchReranker()
    local_q, local_db = _shifted_grid_pair(30, 40, 64, dy=0, dx=0, size=(480, 640))
    reranker.add_keyframe(_kf(0, {}))  # e.g. MobileNetV2 keyframes
    reranker.add_keyframe(
        _kf(2, {"patch_tokens": local_db["patch_tokens"][:, :16], "patch_grid": local_db["patch_grid"]})
    )
    reranker.add_keyframe(_kf(3, {"patch_tokens": local_db["patch_tokens"]}))  # no grid
    assert 0 not in reranker.store and 3 not in reranker.store
    out = reranker.verify(_kf(1, local_q), [Candidate(i, 0.0, 0.5) for i in (0, 2, 3)])
    reasons = {v.candidate.id: v.reason for v in out}
    assert not any(v.passed for v in out)
    assert (
        "no patch tokens" in reasons[0]
        and "different widths" in reasons[2]
        and "no patch tokens" in reasons[3]
    )
    (v,) = reranker.verify(_kf(7, {}), [Candidate(2, 0.0, 0.5)])
    assert not v.passed and v.reason.startswith("query keyframe has no patch tokens")
    bad_grid = {"patch_tokens": local_q["patch_tokens"], "patch_grid": np.array([7, 7, 10, 10], np.float32)}
    (v,) = reranker.verify(_kf(8, bad_grid), [Candidate(2, 0.0, 0.5)])
    assert "does not match" in v.reason


# -- wiring with the real (fixture-weight) TransVPR ---------------------------------------------------


def test_descriptor_stage_puts_transvpr_key_patch_features_in_the_keyframe(transvpr_encoder):
    cfg = PipelineConfig(model="transvpr", reranker="keypatch", keyframe_min_period=0.0, feature_fp16=True)
    stage = DescriptorStage(cfg, transvpr_encoder)
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    result, _ = stage.process(Frame(0.0, image))
    local = result.keyframe.local_features
    assert set(local) == {"patch_tokens", "attention", "patch_grid"}
    assert local["patch_tokens"].shape == (1200, 256) and local["attention"].shape == (1200,)
    np.testing.assert_array_equal(local["patch_grid"], [30, 40, 480, 640])
    verification = VerificationStage(cfg)
    assert verification.reranker.name == "keypatch" and verification.reranker.store.float16
    verification.process(result.keyframe, [])
    # The same view again (a copy of the keyframe): every key patch matches itself.
    again = Keyframe(result.keyframe.id + 1, 1.0, result.keyframe.descriptor, local_features=dict(local))
    (v,) = verification.process(again, [Candidate(result.keyframe.id, 0.0, 1.0)])
    assert v.passed and v.inliers >= 0.9 * int((local["attention"] > 0.02).sum()), v.reason
