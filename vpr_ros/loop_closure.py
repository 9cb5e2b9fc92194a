"""Final loop-closure decision: thresholds plus temporal consistency.

A verified candidate becomes a loop closure when it is similar enough, passed the
re-ranker, and agrees with hypotheses of recent queries: a robot revisiting a place sees
it for several keyframes in a row, with match ids that move along with the query. One-off
matches (perceptual aliasing) rarely repeat like that. A very strong verification
(``accept_score``) may skip the wait.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .types import LoopDecision, LoopStatus, Verification


@dataclass
class _Hypothesis:
    query_id: int
    match_id: int


class LoopClosureDecider:
    def __init__(
        self,
        min_similarity: float = 0.0,
        min_score: float = -math.inf,
        consistency: int = 2,
        id_tolerance: int = 3,
        max_query_gap: int = 3,
        accept_score: float = math.inf,
        history: int = 64,
    ):
        if consistency < 1:
            raise ValueError("consistency must be >= 1 (1 disables the temporal check)")
        self.min_similarity = min_similarity
        self.min_score = min_score
        self.consistency = consistency
        self.id_tolerance = id_tolerance
        self.max_query_gap = max_query_gap
        self.accept_score = accept_score
        self._history: deque[_Hypothesis] = deque(maxlen=history)

    def _support(self, query_id: int, match_id: int) -> int:
        """Number of distinct recent queries with a hypothesis near ``match_id``."""
        supporting = set()
        for h in self._history:
            gap = query_id - h.query_id
            if 0 < gap <= self.max_query_gap and abs(match_id - h.match_id) <= self.id_tolerance + gap:
                supporting.add(h.query_id)
        return len(supporting)

    def decide(self, query_id: int, query_stamp: float, verifications: list[Verification]) -> LoopDecision:
        """``verifications`` as returned by a re-ranker (best first)."""
        if not verifications:
            return LoopDecision(query_id, query_stamp, LoopStatus.NO_CANDIDATES, "no candidates outside the exclusion window")
        similar = [v for v in verifications if v.candidate.similarity >= self.min_similarity]
        if not similar:
            top = max(verifications, key=lambda v: v.candidate.similarity)
            return LoopDecision(
                query_id, query_stamp, LoopStatus.LOW_SIMILARITY,
                f"best similarity {top.candidate.similarity:.3f} < {self.min_similarity:.3f}", top,
            )
        passed = [v for v in similar if v.passed and v.score >= self.min_score]
        if not passed:
            top = similar[0]
            reason = top.reason if not top.passed else f"score {top.score:.3g} < {self.min_score:.3g}"
            return LoopDecision(query_id, query_stamp, LoopStatus.FAILED_VERIFICATION, reason, top)
        best = passed[0]
        support = self._support(query_id, best.candidate.id)
        for v in passed:
            self._history.append(_Hypothesis(query_id, v.candidate.id))
        if support + 1 >= self.consistency:
            return LoopDecision(query_id, query_stamp, LoopStatus.ACCEPTED, f"{best.reason}; {support} agreeing", best)
        if best.score >= self.accept_score:
            return LoopDecision(
                query_id, query_stamp, LoopStatus.ACCEPTED, f"{best.reason}; strong enough to skip consistency", best
            )
        return LoopDecision(
            query_id, query_stamp, LoopStatus.FAILED_CONSISTENCY,
            f"{support + 1} of {self.consistency} consistent queries so far", best,
        )

    def reset(self) -> None:
        self._history.clear()
