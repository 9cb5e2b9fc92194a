"""What a back end got from a run on the world: each closure's pose against the exact truth,
and the drift of odometry vs the optimised path (APE with evo), for the demo and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..evaluation.loops import pose_errors
from ..evaluation.trajectory import ape_rmse
from ..geometry import invert_pose
from .sequence import WorldSequence


@dataclass
class ClosureScore:
    query_frame: int
    match_frame: int
    same_place: bool
    kind: str  # metric, rotation_only or none
    errors: dict  # loops.pose_errors of the camera constraint
    body_errors: dict  # ... and of the body constraint


@dataclass
class WorldScore:
    closures: list[ClosureScore] = field(default_factory=list)
    odometry_ape_m: float | None = None
    optimized_ape_m: float | None = None
    path_nodes: int = 0

    def values(self, key: str, body: bool = False) -> np.ndarray:
        rows = [c.body_errors if body else c.errors for c in self.closures]
        return np.array([r[key] for r in rows if r.get(key) is not None], np.float64)

    def summary(self) -> dict:
        out = {"closures": len(self.closures), "true": sum(c.same_place for c in self.closures)}
        for key in ("rotation_error_deg", "translation_direction_error_deg", "translation_error_pct"):
            v = self.values(key)
            out[key] = (
                None if not len(v) else (float(np.median(v)), float(np.percentile(v, 95)), float(v.max()))
            )
        out["odometry_ape_m"], out["optimized_ape_m"] = self.odometry_ape_m, self.optimized_ape_m
        return out


def score_closures(seq: WorldSequence, closures) -> list[ClosureScore]:
    """``closures``: (query frame, match frame, camera RelativePose | None, body RelativePose | None)."""
    out = []
    for q, m, camera_pose, body_pose in closures:
        truth_cam = invert_pose(seq.gt_camera_poses[m]) @ seq.gt_camera_poses[q]
        truth_body = invert_pose(seq.gt_body_poses[m]) @ seq.gt_body_poses[q]
        kind = "none" if camera_pose is None else camera_pose.kind_name
        out.append(
            ClosureScore(
                q,
                m,
                bool(seq.same_place[q, m]),
                kind,
                pose_errors(camera_pose, truth_cam),
                pose_errors(body_pose, truth_body),
            )
        )
    return out


def score_path(seq: WorldSequence, path: dict[int, np.ndarray]) -> tuple[float | None, float | None, int]:
    """(odometry APE, optimised APE, nodes): RMSE against the true body poses at the path's
    node stamps (image stamps: the player sends odometry with each image), SE(3)-aligned."""
    frame_of = {int(s): i for i, s in enumerate(seq.stamps_ns)}
    stamps = sorted(s for s in path if s in frame_of)
    if len(stamps) < 3:
        return None, None, len(stamps)
    frames = [frame_of[s] for s in stamps]
    truth = seq.gt_body_poses[frames]
    before = ape_rmse(truth, seq.odom_body_poses[frames], align="se3").rmse
    after = ape_rmse(truth, np.stack([path[s] for s in stamps]), align="se3").rmse
    return before, after, len(stamps)


def score_world_run(seq: WorldSequence, closures, path: dict[int, np.ndarray]) -> WorldScore:
    score = WorldScore(score_closures(seq, closures))
    score.odometry_ape_m, score.optimized_ape_m, score.path_nodes = score_path(seq, path)
    return score


__all__ = ["ClosureScore", "WorldScore", "score_closures", "score_path", "score_world_run"]
