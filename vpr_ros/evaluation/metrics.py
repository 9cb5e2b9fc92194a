"""Loop-closure metrics against a same-place ground-truth matrix (frame indices)."""

from __future__ import annotations

from collections.abc import Iterable

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
