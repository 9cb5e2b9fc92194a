"""Final loop-closure decision: thresholds plus temporal consistency.

A verified candidate becomes a loop closure when it is similar enough, passed the
re-ranker, and agrees with hypotheses of recent queries: a robot revisiting a place sees
it for several keyframes in a row, with match ids that move along with the query. One-off
matches (perceptual aliasing) rarely repeat like that. A very strong verification
(``accept_score``) may skip the wait.

When a query confirms a hypothesis, the earlier queries that supported it are confirmed
too (``LoopDecision.confirmed``): the first keyframe of a revisit is reported one keyframe
late instead of never. Back ends take loop constraints in any order, so this costs nothing
but latency.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .types import LoopDecision, LoopStatus, Verification


@dataclass
class _Hypothesis:
    query_id: int
    query_stamp_ns: int
    verification: Verification


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
        self._accepted_queries: deque[int] = deque(maxlen=history)

    def _supporting(self, query_id: int, match_id: int) -> dict[int, _Hypothesis]:
        """Recent queries with a hypothesis near ``match_id`` (best one per query)."""
        supporting: dict[int, _Hypothesis] = {}
        for h in self._history:
            gap = query_id - h.query_id
            near = abs(match_id - h.verification.candidate.id) <= self.id_tolerance + gap
            if 0 < gap <= self.max_query_gap and near and h.query_id not in supporting:
                supporting[h.query_id] = h
        return supporting

    def decide(self, query_id: int, query_stamp_ns: int, verifications: list[Verification]) -> LoopDecision:
        """``verifications`` as returned by a re-ranker (best first)."""
        if not verifications:
            return LoopDecision(
                query_id,
                query_stamp_ns,
                LoopStatus.NO_CANDIDATES,
                "no candidates outside the exclusion window",
            )
        similar = [v for v in verifications if v.candidate.similarity >= self.min_similarity]
        if not similar:
            top = max(verifications, key=lambda v: v.candidate.similarity)
            return LoopDecision(
                query_id,
                query_stamp_ns,
                LoopStatus.LOW_SIMILARITY,
                f"best similarity {top.candidate.similarity:.3f} < {self.min_similarity:.3f}",
                top,
            )
        passed = [v for v in similar if v.passed and v.score >= self.min_score]
        if not passed:
            top = similar[0]
            reason = top.reason if not top.passed else f"score {top.score:.3g} < {self.min_score:.3g}"
            return LoopDecision(query_id, query_stamp_ns, LoopStatus.FAILED_VERIFICATION, reason, top)
        best = passed[0]
        supporting = self._supporting(query_id, best.candidate.id)
        for v in passed:
            self._history.append(_Hypothesis(query_id, query_stamp_ns, v))
        if len(supporting) + 1 >= self.consistency:
            decision = self._accept(
                query_id, query_stamp_ns, best, f"{best.reason}; {len(supporting)} agreeing"
            )
            for h in sorted(supporting.values(), key=lambda h: h.query_id):
                if h.query_id not in self._accepted_queries:
                    reason = f"{h.verification.reason}; confirmed by keyframe {query_id}"
                    decision.confirmed.append(
                        self._accept(h.query_id, h.query_stamp_ns, h.verification, reason)
                    )
            return decision
        if best.score >= self.accept_score:
            return self._accept(
                query_id, query_stamp_ns, best, f"{best.reason}; strong enough to skip consistency"
            )
        return LoopDecision(
            query_id,
            query_stamp_ns,
            LoopStatus.FAILED_CONSISTENCY,
            f"{len(supporting) + 1} of {self.consistency} consistent queries so far",
            best,
        )

    def _accept(self, query_id: int, stamp_ns: int, verification: Verification, reason: str) -> LoopDecision:
        self._accepted_queries.append(query_id)
        return LoopDecision(query_id, stamp_ns, LoopStatus.ACCEPTED, reason, verification)

    def reset(self) -> None:
        self._history.clear()
        self._accepted_queries.clear()
