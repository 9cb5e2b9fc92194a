"""Pair-VPR re-ranker: official pair logits through the class, chunking, rejections, wiring.

The parity test loads only the fixture's decoder and classifier (the encoder is not needed to
score stored dense features), which keeps it to a few seconds of CPU.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from parity import load_fixture
from vpr_ros.config import PipelineConfig
from vpr_ros.feature_store import FeatureStore
from vpr_ros.models.pairvpr import GRID, PairVPR, rebuild_dec_pos_embed_cls
from vpr_ros.models.registry import get_model_spec
from vpr_ros.models.vit import DinoVisionTransformer
from vpr_ros.pipeline import DescriptorStage, VerificationStage
from vpr_ros.rerank import build_reranker
from vpr_ros.rerank.pairvpr import PairVPRParams, PairVPRReranker, pair_classifier_checkpoint
from vpr_ros.types import Candidate, Frame, Keyframe

TOKENS = GRID * GRID


def _decoder_state_dict(fixture: dict) -> dict[str, torch.Tensor]:
    """The fixture's weights (README weight rule) for every key outside the encoder."""
    seed, out = fixture["weights"]["seed"], {}
    for i, t in enumerate(fixture["weights"]["tensors"]):
        if t["key"].startswith("encoder."):
            continue
        shape = tuple(t["shape"])
        if t["std"] == 0:
            value = np.full(shape, np.float32(t["mean"]), dtype=np.float32)
        else:
            z = np.random.default_rng([seed, i]).standard_normal(size=shape, dtype=np.float32)
            value = np.asarray(z * np.float32(t["std"]) + np.float32(t["mean"]), np.float32).reshape(shape)
        out[t["key"]] = torch.from_numpy(value)
    return out


@pytest.fixture(scope="module")
def fixture_dir(parity_dir):
    return parity_dir / "pairvpr_vitb"


@pytest.fixture(scope="module")
def official_decoder(fixture_dir):
    fixture = load_fixture(fixture_dir)
    # A ViT-B-wide encoder with no blocks: its weights are irrelevant to pair scoring.
    model = PairVPR(DinoVisionTransformer(768, depth=0, num_heads=12, num_register_tokens=4))
    state = rebuild_dec_pos_embed_cls(_decoder_state_dict(fixture))  # what eval.py does at load time
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("encoder.") for k in missing)
    return model.eval().requires_grad_(False), fixture


def _kf(kf_id: int, dense=None) -> Keyframe:
    local = {} if dense is None else {"dense": dense}
    return Keyframe(kf_id, float(kf_id), np.zeros(4, np.float32), local_features=local)


def test_pair_score_through_the_reranker_matches_official_logits(official_decoder, fixture_dir):
    model, fixture = official_decoder
    case = next(c for c in fixture["cases"] if c["name"] == "pair")
    dense_a = np.load(fixture_dir / case["inputs"]["dense_a"])[0]
    dense_b = np.load(fixture_dir / case["inputs"]["dense_b"])[0]
    logit = {k: float(np.load(fixture_dir / f).item()) for k, f in case["outputs"].items() if "logit" in k}
    reranker = PairVPRReranker(model=model, min_score=-math.inf)
    reranker.add_keyframe(_kf(2, dense_b))
    query = _kf(1, dense_a)
    reranker.add_keyframe(query)
    (result,) = reranker.verify(query, [Candidate(2, 2.0, 0.7)])
    atol, rtol = case["atol"]["logit_ab"], case["rtol"]["logit_ab"]
    want = logit["logit_ab"] + logit["logit_ba"]
    assert result.passed and result.inliers == -1
    assert result.score == pytest.approx(want, abs=2 * atol, rel=rtol)
    # Both orders are reported (3 decimals): s(q, db) = s(A, B), s(db, q) = s(B, A).
    match = re.search(r"s\(q,db\) (\S+) \+ s\(db,q\) (\S+)", result.reason)
    assert match, result.reason
    assert float(match[1]) == pytest.approx(logit["logit_ab"], abs=5e-4 + atol)
    assert float(match[2]) == pytest.approx(logit["logit_ba"], abs=5e-4 + atol)


# -- a tiny random Pair-VPR: same code paths, milliseconds per pair -----------------------------


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    backbone = DinoVisionTransformer(32, depth=0, num_heads=2, num_register_tokens=4)
    model = PairVPR(backbone, dec_dim=48, dec_depth=1)
    with torch.no_grad():  # break the zero init so that scores differ between pairs
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval().requires_grad_(False)


def _dense(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((TOKENS, 32)).astype(np.float32)


def test_chunked_scores_equal_one_batch_and_are_sorted_best_first(tiny_model):
    cands = [Candidate(i, float(i), 0.5) for i in range(10, 14)]
    query = _kf(1, _dense(1))
    results = {}
    for batch_size in (1, 3, 16):  # one per chunk, a partial last chunk, one chunk
        reranker = PairVPRReranker(model=tiny_model, batch_size=batch_size, min_score=-math.inf)
        for c in cands:
            reranker.add_keyframe(_kf(c.id, _dense(c.id)))
        reranker.add_keyframe(query)
        out = reranker.verify(query, cands)
        scores = [v.score for v in out]
        assert scores == sorted(scores, reverse=True)
        results[batch_size] = {v.candidate.id: v.score for v in out}
    assert len(set(results[16].values())) == len(cands)  # the scores are not all equal
    for batch_size in (1, 3):
        for cid, score in results[16].items():
            assert results[batch_size][cid] == pytest.approx(score, abs=1e-4)
    # Sum of both orders, not one of them.
    reranker = PairVPRReranker(model=tiny_model)
    s_qd, s_dq = reranker.pair_scores(_dense(1), [_dense(10)])
    assert results[16][10] == pytest.approx(float(s_qd[0] + s_dq[0]), abs=1e-5)
    assert abs(float(s_qd[0]) - float(s_dq[0])) > 1e-6


def test_score_threshold_decides_pass(tiny_model):
    reranker = PairVPRReranker(model=tiny_model, min_score=-math.inf)
    reranker.add_keyframe(_kf(10, _dense(10)))
    query = _kf(1, _dense(1))
    (free,) = reranker.verify(query, [Candidate(10, 10.0, 0.5)])
    strict = PairVPRReranker(model=tiny_model, min_score=free.score + 1.0, feature_store=reranker.store)
    (cut,) = strict.verify(query, [Candidate(10, 10.0, 0.5)])
    assert free.passed and not cut.passed
    assert cut.score == pytest.approx(free.score) and "<" in cut.reason


def test_missing_or_malformed_dense_features_are_rejected_with_a_reason(tiny_model):
    reranker = PairVPRReranker(model=tiny_model)
    reranker.add_keyframe(_kf(10))  # e.g. the descriptor node runs another model
    reranker.add_keyframe(_kf(11, _dense(11)[:100]))  # wrong token count
    assert 10 not in reranker.store and 11 not in reranker.store
    query = _kf(1, _dense(1))
    out = reranker.verify(query, [Candidate(10, 0.0, 0.9), Candidate(11, 0.0, 0.8)])
    assert [v.passed for v in out] == [False, False]
    assert all("model:=pairvpr" in v.reason and math.isnan(v.score) for v in out)
    (no_query,) = reranker.verify(_kf(2), [Candidate(10, 0.0, 0.9)])
    assert not no_query.passed and no_query.reason.startswith("query keyframe has no Pair-VPR")
    (bad_query,) = reranker.verify(_kf(3, np.zeros((TOKENS, 7), np.float32)), [Candidate(10, 0.0, 0.9)])
    assert "shape" in bad_query.reason
    assert reranker.verify(query, []) == []


def test_dense_features_live_in_the_feature_store_fp16_and_spilled(tiny_model, tmp_path):
    store = FeatureStore(ram_budget_bytes=TOKENS * 32 * 2, spill_dir=str(tmp_path), float16=True)
    reranker = PairVPRReranker(model=tiny_model, feature_store=store, min_score=-math.inf)
    for i in range(10, 14):
        reranker.add_keyframe(_kf(i, _dense(i)))
    assert store.num_spilled == 3 and store.get(10)["dense"].dtype == np.float16
    query = _kf(1, _dense(1))
    reranker.add_keyframe(query)
    out = {
        v.candidate.id: v.score
        for v in reranker.verify(query, [Candidate(i, 0.0, 0.5) for i in range(10, 14)])
    }
    exact = PairVPRReranker(model=tiny_model, min_score=-math.inf)
    for i in range(10, 14):
        exact.add_keyframe(_kf(i, _dense(i)))
    ref = {
        v.candidate.id: v.score for v in exact.verify(query, [Candidate(i, 0.0, 0.5) for i in range(10, 14)])
    }
    for i in ref:
        assert out[i] == pytest.approx(ref[i], abs=5e-3)


def test_weights_are_resolved_like_the_descriptor_model(tmp_path):
    from vpr_ros.weights import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="pairvpr-vitB.pth"):
        cfg = PipelineConfig.from_dict(
            {"reranker": "pairvpr", "pairvpr_weights": str(tmp_path / "pairvpr-vitB.pth"), "device": "cpu"}
        )
        build_reranker(cfg)


# -- wiring: config -> stages ---------------------------------------------------------------------


class FakeEncoder:
    """Stands in for Encoder: records whether encode or extract ran."""

    def __init__(self, model: str):
        self.spec = get_model_spec(model)
        self.input_size = self.spec.input.size
        self.descriptor_dim = 8
        self.calls: list[str] = []

    def encode(self, images):
        self.calls.append("encode")
        return np.tile(np.eye(8, dtype=np.float32)[:1], (len(images), 1))

    def extract(self, images):
        self.calls.append("extract")
        out = {"global": np.tile(np.eye(8, dtype=np.float32)[:1], (len(images), 1))}
        out["dense"] = np.stack([_dense(len(self.calls))] * len(images))
        return out


def test_descriptor_stage_extracts_dense_only_for_the_pair_reranker():
    frame = Frame(0.0, np.zeros((48, 64, 3), np.uint8))
    cfg = PipelineConfig(model="pairvpr", reranker="pairvpr", keyframe_min_period=0.0)
    stage = DescriptorStage(cfg, FakeEncoder("pairvpr"))
    result, _ = stage.process(frame)
    assert stage.encoder.calls == ["extract"]
    assert set(result.keyframe.local_features) == {"dense", "patch_grid"}
    assert result.keyframe.local_features["dense"].shape == (TOKENS, 32)
    np.testing.assert_array_equal(result.keyframe.local_features["patch_grid"], [23, 23, 322, 322])
    geo = DescriptorStage(PipelineConfig(model="pairvpr", reranker="geometric"), FakeEncoder("pairvpr"))
    result, _ = geo.process(frame)
    assert geo.encoder.calls == ["encode"] and result.keyframe.local_features == {}


def test_verification_stage_passes_config_params_and_a_shared_model(tiny_model):
    cfg = PipelineConfig.from_dict(
        {"reranker": "pairvpr", "pairvpr_batch_size": 2, "pairvpr_min_score": -3.5, "feature_fp16": True}
    )
    stage = VerificationStage(cfg, model=tiny_model)
    rr = stage.reranker
    assert isinstance(rr, PairVPRReranker) and rr.model is tiny_model
    assert (rr.batch_size, rr.min_score, rr.store.float16) == (2, -3.5, True)
    stage.process(_kf(10, _dense(10)), [])
    (v,) = stage.process(_kf(11, _dense(11)), [Candidate(10, 10.0, 0.5)])
    assert math.isfinite(v.score)
    params = PairVPRParams()
    checkpoint = pair_classifier_checkpoint(
        params, PipelineConfig(model="pairvpr", weights="/x/pairvpr-vitB.pth")
    )
    assert checkpoint == ("pairvpr", "/x/pairvpr-vitB.pth")
    # The pair classifier is the descriptor model's own decoder, ViT-L here.
    assert pair_classifier_checkpoint(params, PipelineConfig(model="pairvpr_vitl")) == ("pairvpr_vitl", None)
    assert pair_classifier_checkpoint(params, PipelineConfig(model="image", weights="/x/a.pth")) == (
        "pairvpr",
        None,
    )
    other = PairVPRParams(weights="/y/b.pth")
    assert (
        pair_classifier_checkpoint(other, PipelineConfig(model="pairvpr", weights="/x/a.pth"))[1]
        == "/y/b.pth"
    )
