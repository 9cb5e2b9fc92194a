"""The re-ranker registry: a re-ranker defined in this file alone works in the in-process
pipeline, in `evaluate` and in the re-ranker node; built-ins reset; one home per default."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, fields

import cv2
import numpy as np
import pytest
import torch
import yaml

from vpr_ros.config import PipelineConfig
from vpr_ros.feature_store import FeatureStore
from vpr_ros.models.pairvpr import GRID, PairVPR
from vpr_ros.models.vit import DinoVisionTransformer
from vpr_ros.rerank import (
    RerankerSpec,
    get_reranker_spec,
    param,
    register_reranker,
    reranker_names,
    reranker_parameters,
    unregister_reranker,
)
from vpr_ros.rerank.base import sort_verifications
from vpr_ros.rerank.geometric import GeometricParams, GeometricVerifier
from vpr_ros.rerank.keypatch import KeyPatchParams, KeyPatchReranker
from vpr_ros.rerank.pairvpr import PairVPRParams, PairVPRReranker
from vpr_ros.types import Candidate, Frame, Keyframe, Verification

# -- a re-ranker that exists only in this file --------------------------------------------------


@dataclass(frozen=True)
class ToyParams:
    min_score: float = param(0.9, "minimum global-descriptor similarity for a pass", range=(-1.0, 1.0))


class ToyReranker:
    """Scores a candidate by the dot product of stored global descriptors."""

    name = "toy"

    def __init__(self, min_score: float, store: FeatureStore):
        self.min_score = min_score
        self.store = store

    def add_keyframe(self, keyframe: Keyframe) -> None:
        self.store.put(keyframe.id, {"descriptor": keyframe.descriptor})

    def verify(self, query: Keyframe, candidates: list[Candidate]) -> list[Verification]:
        results = []
        for cand in candidates:
            feats = self.store.get(cand.id)
            if feats is None:
                results.append(Verification(cand, 0.0, -1, False, "toy: unknown keyframe"))
                continue
            score = float(np.dot(query.descriptor, feats["descriptor"]))
            results.append(Verification(cand, score, -1, score >= self.min_score, f"toy score {score:.4f}"))
        return sort_verifications(results)

    def reset(self) -> None:
        self.store.clear()


TOY = RerankerSpec(
    name="toy",
    params=ToyParams,
    build=lambda params, context: ToyReranker(params.min_score, context.feature_store),
    description="test re-ranker: global descriptor dot product",
)


@pytest.fixture
def toy():
    register_reranker(TOY)
    yield TOY
    unregister_reranker("toy")


@pytest.fixture(scope="module")
def corridor(rtabmap_samples) -> list[np.ndarray]:
    """The first six corridor images (RGB)."""
    paths = [rtabmap_samples / "images" / f"{i}.jpg" for i in range(1, 7)]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


def test_a_registered_reranker_has_its_parameters_in_the_config(toy):
    assert "toy" in reranker_names() and "toy_min_score" in reranker_parameters()
    cfg = PipelineConfig.from_dict({"reranker": "toy", "toy_min_score": "0.5"})
    assert cfg.reranker_params() == ToyParams(0.5)
    assert cfg.to_dict()["toy_min_score"] == 0.5 and PipelineConfig().to_dict()["toy_min_score"] == 0.9
    assert PipelineConfig.descriptions()["toy_min_score"].startswith("minimum global-descriptor")
    assert "toy: test re-ranker" in PipelineConfig.descriptions()["reranker"]
    with pytest.raises(ValueError, match=r"toy_min_score.*outside \[-1.0, 1.0\]"):
        PipelineConfig.from_dict({"toy_min_score": 2.0})
    with pytest.raises(ValueError, match="unknown parameter.*toy_max_score"):
        PipelineConfig.from_dict({"toy_max_score": 2.0})
    with pytest.raises(ValueError, match="already registered"):
        register_reranker(TOY)


def test_unregistered_names_and_clashing_parameters_are_refused():
    with pytest.raises(KeyError, match="unknown re-ranker 'toy'"):
        get_reranker_spec("toy")
    with pytest.raises(ValueError, match="unknown parameter.*toy_min_score"):
        PipelineConfig.from_dict({"toy_min_score": 0.5})

    @dataclass(frozen=True)
    class Fp16Params:
        fp16: bool = param(False, "clashes with the generic feature_fp16")

    clash = RerankerSpec("feature", Fp16Params, TOY.build)
    with pytest.raises(ValueError, match="already taken: feature_fp16"):
        register_reranker(clash)
    taken = "already taken: geometric_estimator, geometric_feature, .*geometric_ratio"
    with pytest.raises(ValueError, match=taken):
        register_reranker(RerankerSpec("mine", GeometricParams, TOY.build, prefix="geometric"))
    assert "feature" not in reranker_names() and "mine" not in reranker_names()


def test_a_registered_reranker_runs_in_the_pipeline(toy, corridor):
    from vpr_ros.encoder import Encoder
    from vpr_ros.pipeline import LoopClosurePipeline

    cfg = PipelineConfig.from_dict(
        {
            "model": "mobilenetv2",
            "device": "cpu",
            "reranker": "toy",
            "toy_min_score": 0.999,  # only the very same image passes
            "keyframe_min_period": 0.0,
            "exclude_recent_keyframes": 3,
            "exclude_recent_seconds": 0.0,
            "top_k": 3,
            "consistency": 1,
        }
    )
    pipeline = LoopClosurePipeline(cfg, Encoder("mobilenetv2", device="cpu"))
    assert isinstance(pipeline.verification.reranker, ToyReranker)
    assert pipeline.verification.reranker.min_score == 0.999
    assert pipeline.descriptors.local_feature_names == ()
    accepted = {}
    for offset in (0.0, 100.0):  # the same six images twice: a revisit
        for i, image in enumerate(corridor):
            step = pipeline.process(Frame(offset + i, image))
            if step.decision is not None and step.decision.accepted:
                accepted[step.retrieval.keyframe.id] = step.decision.best.candidate.id
                assert step.decision.best.reason.startswith("toy score")
    assert accepted == {6 + i: i for i in range(6)}


def test_a_registered_reranker_runs_in_evaluate_and_its_parameter_is_reported(toy, rtabmap_samples, tmp_path):
    from vpr_ros.apps.evaluate import main as evaluate_main

    params = tmp_path / "toy.yaml"
    values = {"reranker": "toy", "toy_min_score": 0.42, "keyframe_min_period": 0.0}
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    out = tmp_path / "eval"
    code = evaluate_main(
        [
            "--images", str(rtabmap_samples / "images"),
            "--gt-matrix", str(rtabmap_samples / "ground_truth.bmp"),
            "--max-frames", "8",
            "--model", "mobilenetv2",
            "--params-file", str(params),
            "-p", "exclude_recent_keyframes=2", "-p", "exclude_recent_seconds=0",
            "--output", str(out),
            "--no-progress", "--no-plots", "--threads", "1",
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"]["reranker"] == "toy"
    assert report["parameters"]["toy_min_score"] == 0.42
    assert report["parameters"]["geometric_min_inliers"] == 100  # every re-ranker's parameters
    assert report["num_keyframes"] == 8
    # The toy's score (a descriptor dot product) is what decided, not inlier counts.
    with (out / "queries.csv").open() as f:
        scored = [row for row in csv.DictReader(f) if row["best_score"]]
    assert scored
    for row in scored:
        assert float(row["best_score"]) == pytest.approx(float(row["best_similarity"]), abs=1e-5)


def test_the_reranker_node_declares_and_uses_a_registered_rerankers_parameters(toy, tmp_path):
    rclpy = pytest.importorskip("rclpy", reason="rclpy is needed for the node test")
    from rclpy.parameter import Parameter

    from ros_processes import private_domain_id
    from vpr_ros.msg import MapInfo
    from vpr_ros.ros.reranker_node import RerankerNode

    params = tmp_path / "toy.yaml"
    params.write_text(
        yaml.safe_dump({"/**": {"ros__parameters": {"reranker": "toy", "toy_min_score": 0.37}}})
    )
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=private_domain_id(3))  # the node is never spun
    try:
        node = RerankerNode(context=context, cli_args=["--ros-args", "--params-file", str(params)])
        try:
            assert node.get_parameter("toy_min_score").value == 0.37
            assert node.describe_parameter("toy_min_score").description.startswith("minimum global")
            assert node.active and isinstance(node.stage.reranker, ToyReranker)
            assert node.stage.reranker.min_score == 0.37
            # A map change forgets the keyframes but keeps the re-ranker (and any model it loaded).
            reranker = node.stage.reranker
            node._on_map_info(MapInfo(session="first"))
            node.stage.process(Keyframe(4, 0.0, np.ones(3, np.float32) / np.sqrt(3)), [])
            assert 4 in reranker.store
            node._on_map_info(MapInfo(session="second"))
            assert node.stage.reranker is reranker and 4 not in reranker.store
        finally:
            node.destroy_node()
        overrides = [Parameter("reranker", value="toy"), Parameter("toy_min_score", value=-0.25)]
        node = RerankerNode(context=context, parameter_overrides=overrides)
        try:
            assert node.stage.reranker.min_score == -0.25
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


# -- built-ins ------------------------------------------------------------------------------------


def _texture(seed: int, homography=None) -> np.ndarray:
    """Blob-rich RGB texture (as test_rerank_geometric), optionally warped."""
    rng = np.random.default_rng(seed)
    img = np.zeros((480, 640), np.float32)
    for cells in (6, 12, 24, 48):
        coarse = rng.random((480 // cells + 1, 640 // cells + 1)).astype(np.float32)
        img += cv2.resize(coarse, (640, 480), interpolation=cv2.INTER_CUBIC) / cells**0.5
    gray = np.clip((img - img.min()) / (img.max() - img.min()) * 255, 0, 255).astype(np.uint8)
    if homography is not None:
        gray = cv2.warpPerspective(gray, homography, (640, 480))
    return np.repeat(gray[..., None], 3, axis=2)


def _tiny_pairvpr() -> PairVPR:
    torch.manual_seed(0)
    model = PairVPR(
        DinoVisionTransformer(32, depth=0, num_heads=2, num_register_tokens=4), dec_dim=48, dec_depth=1
    )
    return model.eval().requires_grad_(False)


HOMOGRAPHY = np.array([[0.92, 0.08, 30.0], [-0.05, 0.95, 12.0], [1e-4, -5e-5, 1.0]])


def _builtin_case(name: str):
    """(re-ranker, a map keyframe, a query that passes against it)."""
    zero = np.zeros(4, np.float32)
    if name == "geometric":
        return (
            GeometricVerifier(),
            Keyframe(1, 0.0, zero, image=_texture(0)),
            Keyframe(2, 1.0, zero, image=_texture(0, HOMOGRAPHY)),
        )
    if name == "keypatch":
        tokens = np.random.default_rng(1).standard_normal((12, 16)).astype(np.float32)
        local = {"patch_tokens": tokens, "patch_grid": np.array([3, 4, 48, 64], np.float32)}
        kf = Keyframe(1, 0.0, zero, local_features=local)
        return KeyPatchReranker(min_inliers=4), kf, Keyframe(2, 1.0, zero, local_features=local)
    dense = {"dense": np.random.default_rng(2).standard_normal((GRID * GRID, 32)).astype(np.float32)}
    reranker = PairVPRReranker(model=_tiny_pairvpr(), min_score=-math.inf)
    return (
        reranker,
        Keyframe(1, 0.0, zero, local_features=dense),
        Keyframe(2, 1.0, zero, local_features=dense),
    )


@pytest.mark.parametrize("name", ["geometric", "keypatch", "pairvpr"])
def test_reset_forgets_every_keyframe(name):
    reranker, keyframe, query = _builtin_case(name)
    reranker.add_keyframe(keyframe)
    (before,) = reranker.verify(query, [Candidate(1, 0.0, 1.0)])
    assert 1 in reranker.store and before.passed, before.reason
    reranker.reset()
    assert len(reranker.store) == 0
    (after,) = reranker.verify(query, [Candidate(1, 0.0, 1.0)])
    assert not after.passed and "candidate keyframe" in after.reason
    reranker.add_keyframe(keyframe)  # still usable: the model stayed
    (again,) = reranker.verify(query, [Candidate(1, 0.0, 1.0)])
    assert again.passed and again.score == pytest.approx(before.score)


def test_reset_of_the_none_reranker_and_of_the_stage():
    from vpr_ros.pipeline import VerificationStage

    none = VerificationStage(PipelineConfig(reranker="none"))
    assert none.feature_store is None  # its spec keeps no per-keyframe data
    none.reset()
    stage = VerificationStage(PipelineConfig(reranker="geometric", feature_ram_budget_mb=0.0))
    for i in range(3):  # a zero RAM budget spills all but the newest to disk
        stage.process(Keyframe(i, float(i), np.zeros(4, np.float32), image=_texture(i)), [])
    spill_dir = stage.feature_store.spill_dir
    assert stage.feature_store.num_spilled == 2 and any(spill_dir.iterdir())
    stage.reset()
    assert len(stage.feature_store) == 0 and not any(spill_dir.iterdir())


def test_each_default_has_one_home():
    assert GeometricVerifier().min_inliers == GeometricParams().min_inliers == 100
    assert GeometricVerifier().min_matches == GeometricParams().min_matches == 12
    assert KeyPatchReranker().min_inliers == KeyPatchParams().min_inliers
    pairvpr = PairVPRReranker(model=_tiny_pairvpr())
    assert (pairvpr.batch_size, pairvpr.min_score) == (PairVPRParams().batch_size, PairVPRParams().min_score)
    values, descriptions = PipelineConfig().to_dict(), PipelineConfig.descriptions()
    for name in reranker_names():
        spec = get_reranker_spec(name)
        for f in fields(spec.params):
            key = f"{spec.parameter_prefix}_{f.name}"
            assert values[key] == f.default and descriptions[key] == f.metadata["description"]
    # The names the nodes and YAML files have always used.
    assert [n for n in values if n.startswith(("geometric_", "pairvpr_", "keypatch_"))] == [
        "geometric_feature",
        "geometric_max_features",
        "geometric_ratio",
        "geometric_matcher",
        "geometric_mnn_min_similarity",
        "geometric_min_matches",
        "geometric_min_inliers",
        "geometric_ransac_threshold_px",
        "geometric_estimator",
        "geometric_scale_from_odometry",
        "geometric_min_baseline_m",
        "geometric_max_pose_disagreement_deg",
        "pairvpr_weights",
        "pairvpr_batch_size",
        "pairvpr_min_score",
        "keypatch_threshold",
        "keypatch_ransac_factor",
        "keypatch_min_inliers",
    ]
