"""The re-ranker interface: verify a query keyframe against its retrieval candidates."""

from __future__ import annotations

import math
from typing import Protocol

from ..types import Candidate, Keyframe, Verification


class Reranker(Protocol):
    name: str

    def add_keyframe(self, keyframe: Keyframe) -> None:
        """Remember what verification will need about a map keyframe (features, image...)."""

    def verify(self, query: Keyframe, candidates: list[Candidate]) -> list[Verification]:
        """One verdict per candidate, best score first."""


class NoReranker:
    """Passes retrieval through unchanged: score = global similarity."""

    name = "none"

    def add_keyframe(self, keyframe: Keyframe) -> None:
        pass

    def verify(self, query: Keyframe, candidates: list[Candidate]) -> list[Verification]:
        return [Verification(c, c.similarity, -1, True, "not verified") for c in candidates]


def sort_verifications(results: list[Verification]) -> list[Verification]:
    """Passed first, then by score, NaN scores last."""
    return sorted(results, key=lambda v: (not v.passed, -(v.score if math.isfinite(v.score) else -math.inf)))
