"""The loop-closure pipeline as three stages, each wrapped by one ROS node.

DescriptorStage (descriptor node): keyframe gate -> model -> map search -> map add.
VerificationStage (re-ranker node): keeps what verification needs per keyframe, verifies.
LoopClosureDecider (loop-closure node): thresholds + temporal consistency.

``LoopClosurePipeline`` chains them in one process for offline evaluation and tests, so the
offline path and the ROS graph run the same code.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from .config import PipelineConfig
from .constraints import body_constraint
from .encoder import Encoder
from .feature_store import FeatureStore
from .geometry import is_valid_pose, scale_camera_matrix
from .image_conversion import resize_to_width
from .keyframe_gate import KeyframeGate
from .loop_closure import LoopClosureDecider
from .map.keyframe_map import KeyframeMap
from .rerank import build_reranker, get_reranker_spec, keyframe_local_features, needed_local_features
from .types import Candidate, Frame, Keyframe, LoopDecision

# Distinct (body frame, extrinsics) pairs remembered: cameras of one robot, a few at most.
MAX_MOUNTS = 64


@dataclass
class RetrievalResult:
    keyframe: Keyframe
    candidates: list[Candidate]
    encode_ms: float
    search_ms: float


class DescriptorStage:
    def __init__(self, config: PipelineConfig, encoder: Encoder | None = None, camera: str = ""):
        self.config = config
        self.camera = camera
        self.encoder = encoder or Encoder(
            config.model, config.weights or None, device=config.device, precision=config.precision
        )
        self.gate = KeyframeGate(
            config.keyframe_min_period,
            config.keyframe_min_translation,
            config.keyframe_min_rotation_deg,
            config.stationary_similarity,
        )
        self.map = KeyframeMap(self.encoder.descriptor_dim, config.index_factory, device=config.map_device)
        # Model local features the selected re-ranker reads (none: encode() is enough).
        self.local_feature_names = needed_local_features(config.reranker, self.encoder.spec.local_features)

    def process(self, frame: Frame) -> tuple[RetrievalResult | None, str]:
        """Returns (result, gate reason); result is None when the gate rejects the frame.
        A non-finite or non-rigid pose is dropped: it never reaches the map or the messages."""
        decision = self.gate.check(frame.stamp, frame.pose)  # counts invalid poses itself
        if not decision.accept:
            return None, decision.reason
        if frame.pose is not None and not is_valid_pose(frame.pose):
            frame = dataclasses.replace(frame, pose=None)
        t0 = time.perf_counter()
        local_features = {}
        if self.local_feature_names:
            outputs = self.encoder.extract([frame.image])
            descriptor = outputs["global"][0]
            local_features = keyframe_local_features(
                self.local_feature_names, outputs, self.encoder.input_size
            )
        else:
            descriptor = self.encoder.encode([frame.image])[0]
        t1 = time.perf_counter()
        cfg = self.config
        if cfg.localization_only:
            # The map is from an earlier session, so nothing in it is "recent"; the query gets
            # an id of its own (ids never repeat) but does not join the map.
            candidates = self.map.search(descriptor, cfg.top_k)
            t2 = time.perf_counter()
            kf_id = self.map.reserve_id()
        else:
            # With odometry the path length says how far the camera went; without, a query
            # nearly identical to the keyframe before it is in a stationary run, never a candidate.
            run_start = self.gate.stationary_run(descriptor)
            candidates = self.map.search(
                descriptor,
                cfg.top_k,
                cfg.exclude_recent_keyframes,
                cfg.exclude_recent_seconds,
                frame.stamp,
                exclude_distance_m=cfg.exclude_recent_distance_m,
                query_path_length=self.map.path_length_at(frame.pose),
                exclude_from_id=run_start if frame.pose is None else None,
            )
            t2 = time.perf_counter()
            kf_id = self.map.add(
                descriptor,
                frame.stamp,
                stamp_ns=frame.stamp_ns,
                frame_id=frame.frame_id,
                camera=self.camera,
                pose=frame.pose,
            )
            self.gate.keyframe_added(kf_id, descriptor, run_start)
        image, camera_matrix, depth = verification_view(
            frame.image,
            frame.camera_matrix,
            frame.depth,
            cfg.verification_image_width,
            cfg.verification_upscale,
        )
        keyframe = Keyframe(
            id=kf_id,
            stamp=frame.stamp,
            stamp_ns=frame.stamp_ns,
            lens=frame.lens,
            base_T_camera=frame.base_T_camera,
            base_frame=frame.base_frame,
            descriptor=descriptor,
            image=image,
            camera_matrix=camera_matrix,
            depth=depth,
            pose=frame.pose,
            frame_id=frame.frame_id,
            camera=self.camera,
            local_features=local_features,
        )
        return RetrievalResult(keyframe, candidates, (t1 - t0) * 1e3, (t2 - t1) * 1e3), decision.reason


def verification_view(image, camera_matrix, depth, width: int, upscale: bool = False):
    """The image downscaled to at most ``width`` wide (with ``upscale``: resized to exactly
    ``width``), with its intrinsics and depth to match."""
    import cv2

    if upscale and image.shape[1] < width:
        return _upscaled(image, camera_matrix, depth, width)
    small, scale = resize_to_width(image, width)
    if depth is not None and scale != 1.0:
        depth = cv2.resize(depth, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
    return small, scale_camera_matrix(camera_matrix, scale), depth


def _upscaled(image, camera_matrix, depth, width: int):
    """A small camera's image enlarged for verification: SIFT finds few keypoints in a 160 or
    320 pixel image (measured on the RTAB-Map samples and the rendered world: more true
    closures, none of them false). Bicubic: smooth gradients for the descriptors."""
    import cv2

    h, w = image.shape[:2]
    size = (width, max(1, round(h * width / w)))
    big = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    if depth is not None:
        depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
    if camera_matrix is not None:
        # cv2.resize maps pixel centres (x + 0.5) * s - 0.5: exact, where a plain scale of the
        # principal point is 1.5 pixels off at 4x.
        sx, sy = size[0] / w, size[1] / h
        resize = np.array([[sx, 0.0, 0.5 * (sx - 1)], [0.0, sy, 0.5 * (sy - 1)], [0.0, 0.0, 1.0]])
        camera_matrix = resize @ np.asarray(camera_matrix, dtype=np.float64)
    return big, camera_matrix, depth


class VerificationStage:
    def __init__(self, config: PipelineConfig, model=None):
        """``model``: the descriptor stage's loaded model, used by a re-ranker that can share it
        (``shareable_model``) instead of loading its own copy."""
        self.config = config
        self.feature_store = None
        if get_reranker_spec(config.reranker).uses_feature_store:
            self.feature_store = FeatureStore(
                int(config.feature_ram_budget_mb * 2**20),
                spill_dir=config.feature_spill_dir or None,
                float16=config.feature_fp16,
            )
        self.reranker = build_reranker(config, self.feature_store, model)
        # Per keyframe: its body frame and extrinsics, as an index into the few distinct ones
        # (one per camera), to turn camera constraints into body constraints.
        self._mounts: list[tuple[str, np.ndarray | None]] = []
        self._mount_of: dict[int, int] = {}

    def process(self, query: Keyframe, candidates: list[Candidate]):
        """Remember the query keyframe, then verify its candidates (best first), each relative
        pose also given between the body frames. A query image wider than
        ``verification_image_width`` (another sender) is downscaled first."""
        if query.image is not None and query.image.shape[1] > self.config.verification_image_width:
            query.image, query.camera_matrix, query.depth = verification_view(
                query.image, query.camera_matrix, query.depth, self.config.verification_image_width
            )
        self._remember_mount(query)
        self.reranker.add_keyframe(query)
        verifications = self.reranker.verify(query, candidates)
        for v in verifications:
            match_mount = self._mount_of.get(v.candidate.id)
            if v.relative_pose is None or match_mount is None:
                continue
            match_frame, base_T_cam_match = self._mounts[match_mount]
            if match_frame != query.base_frame:
                continue  # two bodies (or one unnamed): no common body frame to express it in
            v.base_pose = body_constraint(v.relative_pose, base_T_cam_match, query.base_T_camera)
            v.base_frame = query.base_frame if v.base_pose is not None else ""
        return verifications

    def _remember_mount(self, kf: Keyframe) -> None:
        for i, (frame, extrinsics) in enumerate(self._mounts):
            same = (extrinsics is None) == (kf.base_T_camera is None) and (
                extrinsics is None or np.array_equal(extrinsics, kf.base_T_camera)
            )
            if frame == kf.base_frame and same:
                self._mount_of[kf.id] = i
                return
        if len(self._mounts) >= MAX_MOUNTS:  # extrinsics changing every frame: keep none
            return
        self._mounts.append((kf.base_frame, kf.base_T_camera))
        self._mount_of[kf.id] = len(self._mounts) - 1

    def reset(self) -> None:
        """Forget every keyframe (a new map session); a loaded model stays loaded."""
        self._mount_of.clear()
        self._mounts.clear()
        self.reranker.reset()
        if self.feature_store is not None:  # the stage's own: emptied even if reset() forgets it
            self.feature_store.clear()


def shareable_model(config: PipelineConfig, encoder: Encoder):
    """``encoder``'s model when the selected re-ranker can use it instead of loading its own."""
    spec = get_reranker_spec(config.reranker)
    return encoder.model if spec.can_share_model(config.reranker_params(), encoder.spec) else None


def build_decider(config: PipelineConfig) -> LoopClosureDecider:
    return LoopClosureDecider(
        min_similarity=config.min_similarity,
        min_score=config.min_reranker_score,
        consistency=config.consistency,
        id_tolerance=config.consistency_id_tolerance,
        max_query_gap=config.consistency_max_query_gap,
        accept_score=config.accept_score,
        mode=config.consistency_mode,
        sequence_length=config.sequence_length,
    )


@dataclass
class PipelineStep:
    """What happened to one frame in the in-process pipeline."""

    gate_reason: str
    retrieval: RetrievalResult | None = None
    decision: LoopDecision | None = None
    verifications: list = field(default_factory=list)
    verify_ms: float = 0.0


class LoopClosurePipeline:
    def __init__(self, config: PipelineConfig, encoder: Encoder | None = None):
        self.config = config
        self.descriptors = DescriptorStage(config, encoder)
        # One copy of the weights when the re-ranker uses the descriptor model (Pair-VPR).
        self.verification = VerificationStage(config, shareable_model(config, self.descriptors.encoder))
        self.decider = build_decider(config)

    def process(self, frame: Frame) -> PipelineStep:
        retrieval, reason = self.descriptors.process(frame)
        if retrieval is None:
            return PipelineStep(reason)
        t0 = time.perf_counter()
        verifications = self.verification.process(retrieval.keyframe, retrieval.candidates)
        verify_ms = (time.perf_counter() - t0) * 1e3
        kf = retrieval.keyframe
        decision = self.decider.decide(kf.id, kf.stamp_ns, verifications)
        return PipelineStep(reason, retrieval, decision, verifications, verify_ms)
