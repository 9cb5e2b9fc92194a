"""What one evaluation run observed, and the offline (in-process) runner that fills it.

A ``RunRecord`` is the same whether it came from the in-process pipeline or from a replay
through the ROS graph (``replay.py``), so scoring and plotting never care which.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from ..config import PipelineConfig
from ..types import Frame, RelativePose, Verification
from .sources import SourceFrame

BASE_FRAME = "base_link"  # REP-105 body frame the frames' extrinsics refer to


@dataclass
class KeyframeRecord:
    id: int  # keyframe id in the map
    frame: int  # input frame index
    stamp: float
    descriptor: np.ndarray | None = None
    latency_ms: float | None = None  # offline: pipeline time; replay: publish -> decision
    # The verified candidate with the highest re-ranker score (the PR-curve prediction).
    best_match_id: int | None = None
    best_score: float | None = None
    best_similarity: float | None = None
    candidate_ids: list[int] = field(default_factory=list)  # retrieval order
    status: str = ""  # the loop-closure decision (LoopStatus name); "" when none arrived


@dataclass
class ClosureRecord:
    """A published loop closure (accepted decision), by keyframe id, with its relative poses."""

    query_id: int
    match_id: int
    similarity: float
    score: float
    query_stamp_ns: int | None = None
    match_stamp_ns: int | None = None
    relative_pose: RelativePose | None = None  # match_T_query between the camera optical frames
    base_pose: RelativePose | None = None  # the same between the body frames (needs extrinsics)
    inliers: int | None = None


@dataclass
class RunRecord:
    mode: str  # "offline" or "replay"
    frame_stamps: dict[int, float] = field(default_factory=dict)  # every frame read
    frame_poses: dict[int, np.ndarray | None] = field(default_factory=dict)  # ground truth (camera)
    frame_stamps_ns: dict[int, int] = field(default_factory=dict)  # exact, where known (offline)
    frame_odometry: dict[int, np.ndarray | None] = field(default_factory=dict)  # odom_T_base (body)
    base_T_camera: np.ndarray | None = None  # the extrinsics the frames carried (last seen)
    keyframes: list[KeyframeRecord] = field(default_factory=list)
    closures: list[ClosureRecord] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)  # encode/search/verify per keyframe
    info: dict = field(default_factory=dict)  # mode-specific counts (replay drops, ...)
    wall_time_s: float = 0.0

    def frame_of_keyframe(self) -> dict[int, int]:
        return {kf.id: kf.frame for kf in self.keyframes}


def best_verification(verifications: Iterable[Verification]) -> Verification | None:
    """Highest re-ranker score (passed or not), ties broken by global similarity."""

    def key(v: Verification):
        score = v.score if v.score is not None and math.isfinite(v.score) else -math.inf
        return (score, v.candidate.similarity)

    return max(verifications, key=key, default=None)


def run_offline(
    frames: Iterable[SourceFrame],
    config: PipelineConfig,
    progress: Callable[[], None] | None = None,
    pipeline=None,
) -> RunRecord:
    """Every frame through ``LoopClosurePipeline`` in this process (deterministic).

    The pipeline sees what a robot has: the odometry camera pose (odom_T_base @ base_T_camera)
    when the frame has odometry, else its ground-truth pose (as before odometry inputs
    existed); depth, lens, exact stamp and extrinsics as the frame carries them.
    """
    from ..pipeline import LoopClosurePipeline

    pipeline = pipeline or LoopClosurePipeline(config)
    run = RunRecord("offline", stage_ms={"encode": [], "search": [], "verify": []})
    by_id: dict[int, KeyframeRecord] = {}
    t_start = time.perf_counter()
    for frame in frames:
        run.frame_stamps[frame.index] = frame.stamp
        run.frame_poses[frame.index] = frame.pose
        run.frame_odometry[frame.index] = frame.odometry
        if frame.base_T_camera is not None:
            run.base_T_camera = frame.base_T_camera
        pose = frame.pose
        if frame.odometry is not None:
            mount = frame.base_T_camera if frame.base_T_camera is not None else np.eye(4)
            pose = frame.odometry @ mount
        item = Frame(
            frame.stamp,
            frame.image,
            "camera",
            frame.camera_matrix,
            frame.depth,
            pose,
            stamp_ns=frame.stamp_ns,
            lens=frame.lens,
            base_T_camera=frame.base_T_camera,
            base_frame=BASE_FRAME if frame.base_T_camera is not None else "",
        )
        run.frame_stamps_ns[frame.index] = item.stamp_ns  # exact, or rounded from seconds
        t0 = time.perf_counter()
        step = pipeline.process(item)
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        if progress is not None:
            progress()
        if step.retrieval is None:
            continue
        kf = step.retrieval.keyframe
        best = best_verification(step.verifications)
        record = KeyframeRecord(
            id=kf.id,
            frame=frame.index,
            stamp=kf.stamp,
            descriptor=np.array(kf.descriptor, dtype=np.float32),
            latency_ms=elapsed_ms,
            best_match_id=None if best is None else best.candidate.id,
            best_score=None if best is None else float(best.score),
            best_similarity=None if best is None else float(best.candidate.similarity),
            candidate_ids=[c.id for c in step.retrieval.candidates],
            status=step.decision.status.name,
        )
        by_id[kf.id] = record
        run.keyframes.append(record)
        run.stage_ms["encode"].append(step.retrieval.encode_ms)
        run.stage_ms["search"].append(step.retrieval.search_ms)
        run.stage_ms["verify"].append(step.verify_ms)
        for decision in [step.decision, *step.decision.confirmed]:
            if decision.accepted and decision.best is not None:
                if decision.query_id in by_id:
                    by_id[decision.query_id].status = decision.status.name
                chosen = decision.best
                run.closures.append(
                    ClosureRecord(
                        decision.query_id,
                        chosen.candidate.id,
                        float(chosen.candidate.similarity),
                        float(chosen.score),
                        query_stamp_ns=int(decision.query_stamp_ns),
                        match_stamp_ns=int(chosen.candidate.stamp_ns),
                        relative_pose=chosen.relative_pose,
                        base_pose=chosen.base_pose,
                        inliers=int(chosen.inliers),
                    )
                )
    run.wall_time_s = time.perf_counter() - t_start
    return run
