"""Ranking and operating-point metrics on hand-made cases whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.evaluation.metrics import (
    average_precision,
    max_f1,
    pr_curve,
    recall_at_100_precision,
    recall_at_k,
    score_loop_closures,
)


def test_perfect_detector_ranks_every_true_loop_above_every_false_one():
    # 4 queries with a loop, all found with high scores; 3 queries without a loop still
    # predict something, at lower scores.
    scores = [0.9, 0.8, 0.85, 0.95, 0.3, 0.2, 0.1]
    correct = [True, True, True, True, False, False, False]
    curve = pr_curve(scores, correct, num_positives=4)
    assert average_precision(curve) == pytest.approx(1.0)
    assert recall_at_100_precision(curve) == pytest.approx(1.0)
    assert max_f1(curve) == pytest.approx(1.0)
    assert curve.recall[-1] == pytest.approx(1.0)
    assert curve.precision[-1] == pytest.approx(4 / 7)
    assert list(curve.thresholds) == sorted(scores, reverse=True)


def test_all_wrong_detector_scores_zero():
    curve = pr_curve([0.9, 0.5, 0.4], [False, False, False], num_positives=3)
    assert average_precision(curve) == 0.0
    assert recall_at_100_precision(curve) == 0.0
    assert max_f1(curve) == 0.0
    assert np.all(curve.precision == 0) and np.all(curve.recall == 0)


def test_partial_detector_matches_hand_computed_curve():
    # Ranked: T (0.9), F (0.8), T (0.7), F (0.6); 4 queries have a loop.
    curve = pr_curve([0.7, 0.9, 0.6, 0.8], [True, True, False, False], num_positives=4)
    np.testing.assert_allclose(curve.thresholds, [0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(curve.precision, [1.0, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(curve.recall, [0.25, 0.25, 0.5, 0.5])
    # AP = 0.25 * 1 + 0 * 0.5 + 0.25 * 2/3 + 0 * 0.5
    assert average_precision(curve) == pytest.approx(0.25 + 0.25 * 2 / 3)
    assert recall_at_100_precision(curve) == pytest.approx(0.25)
    assert max_f1(curve) == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_tied_scores_enter_the_curve_together():
    curve = pr_curve([0.5, 0.5, 0.2], [True, False, True], num_positives=2)
    np.testing.assert_allclose(curve.thresholds, [0.5, 0.2])
    np.testing.assert_allclose(curve.precision, [0.5, 2 / 3])
    np.testing.assert_allclose(curve.recall, [0.5, 1.0])
    assert recall_at_100_precision(curve) == 0.0  # no threshold keeps only the true one


def test_correct_match_of_a_query_without_loop_counts_for_precision_not_recall():
    # Query 2 names a same-place frame inside the gap: right, but not a loop to find.
    curve = pr_curve([0.9, 0.8], [True, True], num_positives=1, recallable=[True, False])
    np.testing.assert_allclose(curve.precision, [1.0, 1.0])
    np.testing.assert_allclose(curve.recall, [1.0, 1.0])


def test_no_predictions_and_no_positives_give_zero_not_nan():
    empty = pr_curve([], [], num_positives=5)
    assert average_precision(empty) == 0.0 and recall_at_100_precision(empty) == 0.0
    none_to_find = pr_curve([0.3], [False], num_positives=0)
    assert np.all(none_to_find.recall == 0)


def test_pr_curve_rejects_nan_scores_and_length_mismatch():
    with pytest.raises(ValueError):
        pr_curve([np.nan], [True], 1)
    with pytest.raises(ValueError):
        pr_curve([0.1, 0.2], [True], 1)


def test_recall_at_k_over_allowed_candidates():
    # 4 items; query 3 may look at 0..1 only (2 is inside the exclusion window).
    sim = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.2, 0.9, 0.99, 1.0],
        ]
    )
    same = np.zeros((4, 4), bool)
    same[3, 0] = True  # the right match is ranked second among the allowed ones
    allowed = np.zeros((4, 4), bool)
    allowed[3, :2] = True
    r = recall_at_k(sim, same, allowed, queries=[3], ks=(1, 2, 5))
    assert r == {1: 0.0, 2: 1.0, 5: 1.0}
    # A query that never arrived (replay drop) is a miss: denominator 2.
    r = recall_at_k(sim, same, allowed, queries=[3], ks=(1, 2), num_positives=2)
    assert r == {1: 0.0, 2: 0.5}
    assert recall_at_k(sim, same, allowed, queries=[], ks=(1,)) == {1: 0.0}


def test_score_loop_closures_operating_point():
    gt = np.zeros((6, 6), bool)
    gt[4, 0] = gt[5, 1] = True
    s = score_loop_closures([(4, 0), (5, 2)], gt, min_gap=2)
    assert (s["true_positives"], s["false_positives"]) == (1, 1)
    assert s["precision"] == 0.5 and s["recall"] == 0.5
    assert s["false_pairs"] == [(5, 2)]
