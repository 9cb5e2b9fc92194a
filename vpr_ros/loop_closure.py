"""Final loop-closure decision: thresholds plus temporal consistency.

A verified candidate becomes a loop closure when it is similar enough, passed the
re-ranker, and agrees with hypotheses of recent queries: a robot revisiting a place sees
it for several keyframes in a row, with match ids that move along with the query. One-off
matches (perceptual aliasing) rarely repeat like that. A very strong verification
(``accept_score``) may skip the wait.

Two ways to judge agreement (``mode``). ``neighbours``: ``consistency`` queries within
``max_query_gap`` of each other matched keyframes within ``id_tolerance`` (plus the query
gap) of each other. ``sequence`` (SeqSLAM-like): ``sequence_length`` queries, each within
``max_query_gap`` of the one before, matched keyframes in the same order at a steady offset
(each step moves the match id forward by the query step, give or take ``id_tolerance``,
never back). A look-alike place matches for a keyframe or two and at ids that jump; a
revisit goes on along the map. A revisit in the opposite direction (ids going back) passes
only ``neighbours``, which is why it stays the default.

When a query confirms a hypothesis, the earlier queries that supported it are confirmed
too (``LoopDecision.confirmed``): the first keyframe of a revisit is reported a keyframe or
(``sequence``) ``sequence_length`` - 1 keyframes late instead of never. Back ends take loop
constraints in any order, so this costs nothing but latency.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .types import LoopDecision, LoopStatus, Verification

MODES = ("neighbours", "sequence")


@dataclass
class _Hypothesis:
    query_id: int
    query_stamp_ns: int
    verification: Verification
    length: int = 1  # sequence mode: queries in the longest ordered run that ends here


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
        mode: str = "neighbours",
        sequence_length: int = 4,
    ):
        if consistency < 1 or sequence_length < 1:
            raise ValueError("consistency and sequence_length must be >= 1 (1 disables the temporal check)")
        if mode not in MODES:
            raise ValueError(f"consistency mode {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self.sequence_length = sequence_length
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

    def _follows(self, h: _Hypothesis, query_id: int, match_id: int) -> bool:
        """Sequence mode: (query_id, match_id) continues h's run in order at a steady offset."""
        gap = query_id - h.query_id
        step = match_id - h.verification.candidate.id
        return 0 < gap <= self.max_query_gap and step >= 0 and abs(step - gap) <= self.id_tolerance

    def _run_length(self, query_id: int, match_id: int) -> int:
        return 1 + max((h.length for h in self._history if self._follows(h, query_id, match_id)), default=0)

    def _run(self, head: _Hypothesis) -> list[_Hypothesis]:
        """The earlier queries of head's run (oldest first), as far as the history goes back:
        each step the newest hypothesis that it followed with a run one shorter."""
        run, cur = [], head
        while cur.length > 1:
            earlier = [h for h in self._history if h.length == cur.length - 1]
            prev = next(
                (
                    h
                    for h in reversed(earlier)
                    if self._follows(h, cur.query_id, cur.verification.candidate.id)
                ),
                None,
            )
            if prev is None:
                break
            run.append(prev)
            cur = prev
        return run[::-1]

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
        if self.mode == "sequence":
            return self._decide_sequence(query_id, query_stamp_ns, passed)
        best = passed[0]
        supporting = self._supporting(query_id, best.candidate.id)
        for v in passed:
            self._history.append(_Hypothesis(query_id, query_stamp_ns, v))
        if len(supporting) + 1 >= self.consistency:
            decision = self._accept(
                query_id, query_stamp_ns, best, f"{best.reason}; {len(supporting)} agreeing"
            )
            self._confirm(decision, sorted(supporting.values(), key=lambda h: h.query_id))
            return decision
        return self._unconfirmed(
            query_id,
            query_stamp_ns,
            best,
            f"{len(supporting) + 1} of {self.consistency} consistent queries so far",
        )

    def _decide_sequence(self, query_id: int, stamp_ns: int, passed: list[Verification]) -> LoopDecision:
        heads = [
            _Hypothesis(query_id, stamp_ns, v, self._run_length(query_id, v.candidate.id)) for v in passed
        ]
        # The best-ranked candidate that completes a run, else the best one.
        head = next((h for h in heads if h.length >= self.sequence_length), heads[0])
        complete = head.length >= self.sequence_length
        run = self._run(head) if complete else []  # before the heads join the history
        self._history.extend(heads)
        best = head.verification
        if complete:
            decision = self._accept(query_id, stamp_ns, best, f"{best.reason}; run of {head.length} in order")
            self._confirm(decision, run)
            return decision
        return self._unconfirmed(
            query_id,
            stamp_ns,
            best,
            f"run of {head.length} of {self.sequence_length} queries in order so far",
        )

    def _confirm(self, decision: LoopDecision, earlier: list[_Hypothesis]) -> None:
        for h in earlier:
            if h.query_id not in self._accepted_queries:
                reason = f"{h.verification.reason}; confirmed by keyframe {decision.query_id}"
                decision.confirmed.append(self._accept(h.query_id, h.query_stamp_ns, h.verification, reason))

    def _unconfirmed(self, query_id: int, stamp_ns: int, best: Verification, reason: str) -> LoopDecision:
        if best.score >= self.accept_score:
            return self._accept(query_id, stamp_ns, best, f"{best.reason}; strong enough to skip consistency")
        return LoopDecision(query_id, stamp_ns, LoopStatus.FAILED_CONSISTENCY, reason, best)

    def _accept(self, query_id: int, stamp_ns: int, verification: Verification, reason: str) -> LoopDecision:
        self._accepted_queries.append(query_id)
        return LoopDecision(query_id, stamp_ns, LoopStatus.ACCEPTED, reason, verification)

    def reset(self) -> None:
        self._history.clear()
        self._accepted_queries.clear()
