"""Score a ``RunRecord`` against ground truth: the numbers of report.json.

Definitions (also in docs/evaluation.md):

* Queries are keyframes. The reference keyframes are the frames the keyframe gate accepts
  when every frame arrives (offline these are the run's keyframes; in replay, frames lost
  in transport are missing from the run but still count).
* A reference keyframe *has a loop* when an earlier reference keyframe shows the same place
  and the pair is outside the exclusion window (``LoopWindow``: at least
  ``exclude_recent_keyframes`` + 1 keyframes, ``max(exclude_recent_seconds, --min-gap-s)``
  seconds and ``--min-gap-frames`` frames apart): the detector may report only those.
  ``num_queries_with_loop`` counts them; it is the denominator of every recall.
* Operating point: the published loop closures. True positive when ground truth says the
  two frames show the same place, false positive otherwise; recall = queries with a loop
  that got at least one true closure / ``num_queries_with_loop``.
* PR curve: per query keyframe, one prediction: the verified candidate with the highest
  re-ranker score (passed or not; the global similarity when the re-ranker is ``none``),
  with that score as confidence. The threshold sweeps over the scores; at each threshold
  precision = correct / reported predictions, recall = correct predictions of queries
  with a loop / ``num_queries_with_loop``. Average precision is the area under that step
  curve; recall_at_100_precision the highest recall with no false prediction.
* Recall@K: exact inner-product ranking of each query's descriptor against all earlier
  keyframes outside the exclusion window (what a Flat index returns); a hit when one of
  the K best shows the same place. Over the queries with a loop (misses for dropped ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..config import PipelineConfig
from ..keyframe_gate import KeyframeGate
from .ground_truth import GroundTruth, LoopWindow
from .metrics import (
    PRCurve,
    average_precision,
    max_f1,
    pr_curve,
    recall_at_100_precision,
    recall_at_k,
)
from .run import RunRecord

RECALL_KS = (1, 5, 10)


@dataclass
class Scores:
    report: dict  # flat numbers for report.json
    curve: PRCurve
    operating_point: tuple[float | None, float | None]  # (precision, recall) of published closures
    keyframe_frames: np.ndarray  # frame index of each run keyframe, in id order
    similarity: np.ndarray | None  # [K, K] cosine similarity of run keyframes
    closures: list[tuple[int, int, bool]] = field(default_factory=list)  # (query frame, match frame, true)
    queries: list[dict] = field(default_factory=list)  # per-keyframe rows for queries.csv


def reference_keyframes(run: RunRecord, config: PipelineConfig) -> list[int]:
    """Frames the keyframe gate accepts when nothing is lost (the run's inputs, in order).

    Offline the gate also saw the poses; a replay publishes images only.
    """
    gate = KeyframeGate(
        config.keyframe_min_period, config.keyframe_min_translation, config.keyframe_min_rotation_deg
    )
    with_poses = run.mode == "offline"
    frames = sorted(run.frame_stamps)
    return [
        f
        for f in frames
        if gate.check(run.frame_stamps[f], run.frame_poses.get(f) if with_poses else None).accept
    ]


def loop_window(config: PipelineConfig, min_gap_s: float, min_gap_frames: int) -> LoopWindow:
    return LoopWindow(
        min_gap_s=max(float(min_gap_s), float(config.exclude_recent_seconds)),
        min_gap_frames=int(min_gap_frames),
        min_gap_keyframes=int(config.exclude_recent_keyframes) + 1,
    )


def _stat(values, fn) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(fn(values)) if values else None


def score_run(run: RunRecord, gt: GroundTruth, config: PipelineConfig, window: LoopWindow) -> Scores:
    same, valid = gt.same_place, gt.valid
    if run.frame_stamps and max(run.frame_stamps) >= len(valid):
        raise ValueError(
            f"ground truth covers {len(valid)} frames, the input has {max(run.frame_stamps) + 1}"
        )

    # Queries with a loop, over the reference keyframes.
    ref = np.array(reference_keyframes(run, config), dtype=int)
    ref_stamps = np.array([run.frame_stamps[f] for f in ref])
    allowed = window.allowed(ref, ref_stamps, np.arange(len(ref)))
    allowed &= valid[ref][:, None] & valid[ref][None, :]
    has_loop = (allowed & same[np.ix_(ref, ref)]).any(axis=1)
    positive_frames = set(ref[has_loop].tolist())
    num_positives = len(positive_frames)

    kfs = sorted(run.keyframes, key=lambda k: k.id)
    frame_of = {k.id: k.frame for k in kfs}

    # Operating point: the published closures.
    closures, unscored = [], 0
    for c in run.closures:
        q, m = frame_of.get(c.query_id), frame_of.get(c.match_id)
        if q is None or m is None or not (valid[q] and valid[m]):
            unscored += 1
            continue
        closures.append((q, m, bool(same[q, m])))
    tp = sum(1 for _, _, ok in closures if ok)
    fp = len(closures) - tp
    recalled = {q for q, _, ok in closures if ok and q in positive_frames}
    precision = tp / len(closures) if closures else None
    recall = len(recalled) / num_positives if num_positives else None

    # PR curve over the best verified candidate of each query.
    scores, correct, recallable, rows = [], [], [], []
    for k in kfs:
        m = frame_of.get(k.best_match_id) if k.best_match_id is not None else None
        ok = None
        if m is not None and valid[k.frame] and valid[m] and k.best_score is not None:
            score = k.best_score if math.isfinite(k.best_score) else -math.inf
            ok = bool(same[k.frame, m])
            scores.append(score)
            correct.append(ok)
            recallable.append(k.frame in positive_frames)
        rows.append(
            {
                "keyframe": k.id,
                "frame": k.frame,
                "stamp": k.stamp,
                "has_loop": k.frame in positive_frames,
                "best_match_frame": m,
                "best_score": k.best_score,
                "best_similarity": k.best_similarity,
                "best_correct": ok,
                "decision": k.status,
                "latency_ms": k.latency_ms,
            }
        )
    curve = pr_curve(scores, correct, num_positives, recallable)

    # Recall@K from the descriptors, with the detector's exclusion rule over run keyframes.
    frames_arr = np.array([k.frame for k in kfs], dtype=int)
    similarity = None
    recall_k = {k: None for k in RECALL_KS}
    if kfs and all(k.descriptor is not None for k in kfs):
        desc = np.stack([k.descriptor for k in kfs]).astype(np.float32)
        similarity = desc @ desc.T
        stamps = np.array([k.stamp for k in kfs])
        run_allowed = window.allowed(frames_arr, stamps, np.arange(len(kfs)))
        run_allowed &= valid[frames_arr][:, None] & valid[frames_arr][None, :]
        queries = [i for i, f in enumerate(frames_arr) if f in positive_frames]
        recall_k = recall_at_k(
            similarity, same[np.ix_(frames_arr, frames_arr)], run_allowed, queries, RECALL_KS, num_positives
        )

    latencies = [k.latency_ms for k in kfs]
    report = {
        "num_frames": len(run.frame_stamps),
        "num_keyframes": len(kfs),
        "num_reference_keyframes": int(len(ref)),
        "num_frames_with_ground_truth": int(valid.sum()),
        "num_queries_with_loop": num_positives,
        "num_loop_closures": len(closures),
        "true_positives": tp,
        "false_positives": fp,
        "precision": precision,
        "recall": recall,
        "recall_at_100_precision": recall_at_100_precision(curve) if num_positives else None,
        "average_precision": average_precision(curve) if num_positives else None,
        "max_f1": max_f1(curve) if num_positives else None,
        **{f"recall_at_{k}": v for k, v in recall_k.items()},
        "mean_keyframe_latency_ms": _stat(latencies, np.mean),
        "p95_keyframe_latency_ms": _stat(latencies, lambda v: np.percentile(v, 95)),
        **{f"mean_{stage}_ms": _stat(v, np.mean) for stage, v in run.stage_ms.items()},
        "closures_without_ground_truth": unscored,
        "false_pairs": [[q, m] for q, m, ok in closures if not ok],
    }
    return Scores(report, curve, (precision, recall), frames_arr, similarity, closures, rows)
