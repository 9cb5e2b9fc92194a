"""Re-rankers: verify retrieval candidates before a loop closure is accepted."""

from __future__ import annotations

from .base import NoReranker, Reranker
from .features import MODEL_FEATURE_RERANKERS, keyframe_local_features, needed_local_features

RERANKERS = ("geometric", "pairvpr", "keypatch", "none")


def build_reranker(name: str, **params) -> Reranker:
    """Build a re-ranker by name; ``params`` are its constructor keyword arguments."""
    if name == "none":
        return NoReranker()
    if name == "geometric":
        from .geometric import GeometricVerifier

        return GeometricVerifier(**params)
    if name == "pairvpr":
        from .pairvpr import PairVPRReranker

        return PairVPRReranker(**params)
    if name == "keypatch":
        from .keypatch import KeyPatchReranker

        return KeyPatchReranker(**params)
    raise KeyError(f"unknown re-ranker '{name}'; known: {', '.join(RERANKERS)}")


__all__ = [
    "MODEL_FEATURE_RERANKERS",
    "RERANKERS",
    "NoReranker",
    "Reranker",
    "build_reranker",
    "keyframe_local_features",
    "needed_local_features",
]
