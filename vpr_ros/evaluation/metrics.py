"""Loop-closure metrics against a same-place ground truth.

Two kinds: the operating point of a detector (``score_loop_closures``: precision and recall
of the loop closures it published) and its ranking quality (``pr_curve`` swept over a score
threshold, with ``average_precision``, ``recall_at_100_precision``, ``max_f1``; and
``recall_at_k`` of retrieval). All take frame or keyframe indices; none knows about ROS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


def queries_with_loop(same_place: np.ndarray, queries: Iterable[int], min_gap: int) -> set[int]:
    """Queries that have at least one earlier same-place frame at least ``min_gap`` frames back."""
    out = set()
    for q in queries:
        limit = q - min_gap + 1
        if limit > 0 and same_place[q, :limit].any():
            out.add(int(q))
    return out


def score_loop_closures(
    closures: list[tuple[int, int]],
    same_place: np.ndarray,
    queries: Iterable[int] | None = None,
    min_gap: int = 1,
) -> dict:
    """Precision and recall of published loop closures (query frame, match frame).

    A closure is a true positive when ground truth says both frames show the same place.
    Recall is over the queries that have a loop to find: the fraction of them with at least
    one true closure.
    """
    same_place = np.asarray(same_place, dtype=bool)
    queries = range(len(same_place)) if queries is None else list(queries)
    positives = queries_with_loop(same_place, queries, min_gap)
    tp_pairs = [(q, m) for q, m in closures if same_place[q, m]]
    fp_pairs = [(q, m) for q, m in closures if not same_place[q, m]]
    recalled = {q for q, _ in tp_pairs} & positives
    n = len(closures)
    return {
        "num_closures": n,
        "true_positives": len(tp_pairs),
        "false_positives": len(fp_pairs),
        "precision": len(tp_pairs) / n if n else None,
        "num_queries_with_loop": len(positives),
        "queries_recalled": len(recalled),
        "recall": len(recalled) / len(positives) if positives else None,
        "false_pairs": fp_pairs,
    }


# -- ranking metrics: precision-recall over a score threshold, Recall@K ------------------------


@dataclass
class PRCurve:
    """Precision and recall at each distinct score threshold, highest threshold first.

    Point i counts every prediction with ``score >= thresholds[i]`` as reported.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    def as_dict(self) -> dict:
        return {
            "threshold": [float(v) for v in self.thresholds],
            "precision": [float(v) for v in self.precision],
            "recall": [float(v) for v in self.recall],
        }


def pr_curve(
    scores: Sequence[float],
    correct: Sequence[bool],
    num_positives: int,
    recallable: Sequence[bool] | None = None,
) -> PRCurve:
    """Precision-recall over a threshold on ``scores``, one prediction per query.

    ``correct[i]``: prediction i names a true same place (a true positive when reported,
    a false positive otherwise). Recall is the number of reported correct predictions whose
    query has a loop to find (``recallable[i]``, default: all) over ``num_positives``, the
    number of queries with a loop to find. Tied scores enter together.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=bool).ravel()
    recallable = correct if recallable is None else correct & np.asarray(recallable, dtype=bool).ravel()
    if not (len(scores) == len(correct) == len(recallable)):
        raise ValueError("scores, correct and recallable must have the same length")
    if np.isnan(scores).any():
        raise ValueError("scores must not be NaN")
    order = np.argsort(-scores, kind="stable")
    scores, correct, recallable = scores[order], correct[order], recallable[order]
    tp = np.cumsum(correct)
    found = np.cumsum(recallable)
    reported = np.arange(1, len(scores) + 1)
    # The last prediction of each run of equal scores closes that threshold's point.
    last = np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.zeros(0, bool)
    precision = tp[last] / reported[last]
    recall = found[last] / num_positives if num_positives > 0 else np.zeros(int(last.sum()))
    return PRCurve(scores[last], precision.astype(np.float64), recall.astype(np.float64))


def average_precision(curve: PRCurve) -> float:
    """Area under the precision-recall step curve: sum of (R_i - R_{i-1}) * P_i, R_0 = 0.

    No interpolation; a detector that never finds a loop scores 0.
    """
    recall = np.r_[0.0, curve.recall]
    return float(np.sum(np.diff(recall) * curve.precision))


def recall_at_100_precision(curve: PRCurve) -> float:
    """Highest recall reached while every reported prediction is correct (0 if none)."""
    perfect = curve.precision >= 1.0
    return float(curve.recall[perfect].max()) if perfect.any() else 0.0


def max_f1(curve: PRCurve) -> float:
    p, r = curve.precision, curve.recall
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return float(f1.max()) if len(f1) else 0.0


def recall_at_k(
    similarity: np.ndarray,
    same_place: np.ndarray,
    allowed: np.ndarray,
    queries: Iterable[int],
    ks: Sequence[int] = (1, 5, 10),
    num_positives: int | None = None,
) -> dict[int, float]:
    """Fraction of queries with a same-place match among their top-K retrieved items.

    Each query row of ``similarity`` is ranked over the columns ``allowed`` for it (what the
    map may return); ``same_place`` says which columns are right. The denominator is
    ``num_positives`` (default: the number of queries), so queries that could not be ranked
    at all (a dropped frame in replay) count as misses.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    same_place = np.asarray(same_place, dtype=bool)
    allowed = np.asarray(allowed, dtype=bool)
    queries = list(queries)
    denominator = len(queries) if num_positives is None else num_positives
    if denominator == 0:
        return {int(k): 0.0 for k in ks}
    first_hit = []
    for q in queries:
        cols = np.flatnonzero(allowed[q])
        ranked = cols[np.argsort(-similarity[q, cols], kind="stable")]
        hits = np.flatnonzero(same_place[q, ranked])
        first_hit.append(hits[0] if len(hits) else np.inf)
    first_hit = np.asarray(first_hit)
    return {int(k): float(np.sum(first_hit < k) / denominator) for k in ks}
