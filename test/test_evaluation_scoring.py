"""score_run on a hand-made run: a dropped keyframe, a look-alike, known PR and R@K answers."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.config import PipelineConfig
from vpr_ros.evaluation.ground_truth import GroundTruth
from vpr_ros.evaluation.run import ClosureRecord, KeyframeRecord, RunRecord
from vpr_ros.evaluation.scoring import loop_window, score_run


def _run() -> tuple[RunRecord, GroundTruth, PipelineConfig]:
    """Frames 0-9, 1 s apart; frames 6-9 revisit 1-4; frame 8 never arrived (replay drop).

    Descriptors are one-hot by frame % 5, so frame 5 looks exactly like frame 0 but is
    another place (a look-alike).
    """
    config = PipelineConfig(exclude_recent_keyframes=1, exclude_recent_seconds=0.0, keyframe_min_period=0.5)
    run = RunRecord("replay")
    for f in range(10):
        run.frame_stamps[f] = float(f)
        run.frame_poses[f] = None
    best = {6: (1, 50.0), 7: (2, 40.0), 9: (0, 45.0), 5: (0, 10.0)}  # frame -> (match frame, score)
    frames = [f for f in range(10) if f != 8]
    kf_of = {f: i for i, f in enumerate(frames)}
    for f in frames:
        m, score = best.get(f, (None, None))
        run.keyframes.append(
            KeyframeRecord(
                id=kf_of[f],
                frame=f,
                stamp=float(f),
                descriptor=np.eye(5, dtype=np.float32)[f % 5],
                latency_ms=10.0 + f,
                best_match_id=None if m is None else kf_of[m],
                best_score=score,
            )
        )
    run.closures = [
        ClosureRecord(kf_of[6], kf_of[1], 1.0, 50.0),
        ClosureRecord(kf_of[9], kf_of[0], 1.0, 45.0),
    ]
    same = np.zeros((10, 10), bool)
    for q in range(6, 10):
        same[q, q - 5] = same[q - 5, q] = True
    return run, GroundTruth.from_matrix(same, 10, "hand-made"), config


def test_scores_of_a_hand_made_run():
    run, gt, config = _run()
    s = score_run(run, gt, config, loop_window(config, 0.0, 0))
    r = s.report
    assert r["num_reference_keyframes"] == 10 and r["num_keyframes"] == 9
    assert r["num_queries_with_loop"] == 4  # frames 6, 7, 8, 9; the dropped 8 still counts
    assert (r["true_positives"], r["false_positives"]) == (1, 1)
    assert r["false_pairs"] == [[9, 0]]
    assert r["precision"] == 0.5 and r["recall"] == 0.25
    # Predictions ranked: 50 T, 45 F, 40 T, 10 F (frame 5 has no loop).
    np.testing.assert_allclose(s.curve.precision, [1.0, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(s.curve.recall, [0.25, 0.25, 0.5, 0.5])
    assert r["recall_at_100_precision"] == 0.25
    assert r["average_precision"] == pytest.approx(0.25 + 0.25 * 2 / 3)
    # Descriptors: 6, 7 and 9 find their place first (frame 5's look-alike of 0 is not asked);
    # the dropped frame 8 is a miss.
    assert r["recall_at_1"] == 0.75 and r["recall_at_10"] == 0.75
    assert r["mean_keyframe_latency_ms"] == pytest.approx(np.mean([10.0 + f for f in range(10) if f != 8]))
    rows = {row["frame"]: row for row in s.queries}
    assert rows[9]["best_match_frame"] == 0 and rows[9]["best_correct"] is False
    assert rows[6]["has_loop"] and not rows[5]["has_loop"]


def test_a_wider_gap_removes_loops_from_the_ground_truth():
    run, gt, config = _run()
    r = score_run(run, gt, config, loop_window(config, min_gap_s=5.5, min_gap_frames=0)).report
    assert r["num_queries_with_loop"] == 0  # every revisit is 5 s back
    assert r["recall"] is None and r["average_precision"] is None
    assert r["true_positives"] == 1  # the published closure is still right


def test_frames_without_ground_truth_are_not_scored():
    run, gt, config = _run()
    gt.valid[0] = False
    gt.same_place[0, :] = gt.same_place[:, 0] = False
    r = score_run(run, gt, config, loop_window(config, 0.0, 0)).report
    assert r["closures_without_ground_truth"] == 1  # 9 -> 0
    assert r["false_positives"] == 0 and r["true_positives"] == 1
