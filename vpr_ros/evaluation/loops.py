"""How good the relative pose of each published loop closure is, against ground-truth poses.

The closure's ``relative_pose`` is match_T_query between the two camera optical frames; the
ground truth is ``inv(gt_cam[match]) @ gt_cam[query]`` from the frames' world_T_camera poses.
Per accepted closure (one row of loops.csv):

* ``rotation_error_deg``: angle of R_est^T R_gt (every pose kind).
* ``translation_direction_error_deg``: angle between the estimated and the true translation
  (metric, and rotation-only whose translation is a unit direction).
* ``translation_error_m`` = |t_est - t_gt| and ``translation_error_pct`` = 100 * that / |t_gt|
  (metric only: a rotation-only translation has no length).

Directions and percentages need a true baseline: below ``MIN_BASELINE_M`` they are left out.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..geometry import angle_between_deg, invert_pose, rotation_angle_deg
from ..types import RelativePose
from .ground_truth import GroundTruth
from .run import RunRecord

POSE_KINDS = ("metric", "rotation_only", "none")
ERRORS = (
    "rotation_error_deg",
    "translation_direction_error_deg",
    "translation_error_m",
    "translation_error_pct",
)
MIN_BASELINE_M = 1e-3
FIELDS = [
    "query_keyframe",
    "match_keyframe",
    "query_frame",
    "match_frame",
    "query_stamp_ns",
    "match_stamp_ns",
    "same_place",
    "gt_distance_m",
    "gt_rotation_deg",
    "pose_kind",
    *ERRORS,
    "estimated_translation_m",
    "inliers",
    "score",
    "similarity",
]


def pose_kind(pose: RelativePose | None) -> str:
    return "none" if pose is None else pose.kind_name


def pose_errors(estimate: RelativePose | None, truth: np.ndarray) -> dict:
    """The four errors of ``estimate`` against the 4x4 ``truth`` (None where they do not apply)."""
    out = dict.fromkeys(ERRORS)
    if estimate is None:
        return out
    r_est, t_est = np.asarray(estimate.rotation, np.float64), np.asarray(estimate.translation, np.float64)
    r_gt, t_gt = truth[:3, :3], truth[:3, 3]
    baseline = float(np.linalg.norm(t_gt))
    out["rotation_error_deg"] = rotation_angle_deg(r_est.T @ r_gt)
    if baseline >= MIN_BASELINE_M:
        direction = angle_between_deg(t_est, t_gt)
        out["translation_direction_error_deg"] = direction if math.isfinite(direction) else None
    if estimate.metric:
        out["translation_error_m"] = float(np.linalg.norm(t_est - t_gt))
        if baseline >= MIN_BASELINE_M:
            out["translation_error_pct"] = 100.0 * out["translation_error_m"] / baseline
    return out


def loop_rows(run: RunRecord, gt: GroundTruth | None = None, poses: dict | None = None) -> list[dict]:
    """One row per published closure. ``poses``: ground-truth world_T_camera per frame index
    (default ``run.frame_poses``); ``gt`` gives ``same_place`` (None when it has no verdict)."""
    poses = run.frame_poses if poses is None else poses
    frame_of = run.frame_of_keyframe()
    rows = []
    for c in run.closures:
        q, m = frame_of.get(c.query_id), frame_of.get(c.match_id)
        row = {
            "query_keyframe": c.query_id,
            "match_keyframe": c.match_id,
            "query_frame": q,
            "match_frame": m,
            "query_stamp_ns": c.query_stamp_ns,
            "match_stamp_ns": c.match_stamp_ns,
            "same_place": None,
            "gt_distance_m": None,
            "gt_rotation_deg": None,
            "pose_kind": pose_kind(c.relative_pose),
            **dict.fromkeys(ERRORS),
            "estimated_translation_m": None,
            "inliers": c.inliers,
            "score": c.score,
            "similarity": c.similarity,
        }
        if c.relative_pose is not None and c.relative_pose.metric:
            row["estimated_translation_m"] = float(np.linalg.norm(c.relative_pose.translation))
        if q is not None and m is not None:
            if gt is not None and max(q, m) < len(gt.valid) and gt.valid[q] and gt.valid[m]:
                row["same_place"] = bool(gt.same_place[q, m])
            gt_q, gt_m = poses.get(q), poses.get(m)
            if gt_q is not None and gt_m is not None:
                truth = invert_pose(gt_m) @ np.asarray(gt_q, np.float64)
                row["gt_distance_m"] = float(np.linalg.norm(truth[:3, 3]))
                row["gt_rotation_deg"] = rotation_angle_deg(truth[:3, :3])
                row.update(pose_errors(c.relative_pose, truth))
        rows.append(row)
    return rows


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "median": None, "p95": None, "max": None}
    v = np.asarray(values, np.float64)
    return {
        "n": len(v),
        "median": float(np.median(v)),
        "p95": float(np.percentile(v, 95)),
        "max": float(v.max()),
    }


def relative_pose_summary(rows: list[dict]) -> dict:
    """report.json ``relative_pose``: counts per pose kind, and each error's median / p95 / max
    over all closures that have it, and over the true ones (same place) alone."""
    kinds = {k: sum(r["pose_kind"] == k for r in rows) for k in POSE_KINDS}
    true_rows = [r for r in rows if r["same_place"]]
    summary = {
        "frames": "camera optical frames, match_T_query; truth inv(gt_cam[match]) @ gt_cam[query]",
        "closures": len(rows),
        "with_ground_truth_pose": sum(r["gt_distance_m"] is not None for r in rows),
        "pose_kinds": kinds,
        "errors": {e: _stats([r[e] for r in rows if r[e] is not None]) for e in ERRORS},
        "errors_true_closures": {e: _stats([r[e] for r in true_rows if r[e] is not None]) for e in ERRORS},
    }
    summary["max_rotation_error_deg"] = summary["errors"]["rotation_error_deg"]["max"]
    return summary


def write_loops_csv(path: Path, rows: list[dict]) -> Path:
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in FIELDS})
    return Path(path)
