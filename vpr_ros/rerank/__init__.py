"""Re-rankers: verify retrieval candidates before a loop closure is accepted."""

from __future__ import annotations

from .base import NoReranker, Reranker

RERANKERS = ("geometric", "none")


def build_reranker(name: str, **params) -> Reranker:
    """Build a re-ranker by name; ``params`` are its constructor keyword arguments."""
    if name == "none":
        return NoReranker()
    if name == "geometric":
        from .geometric import GeometricVerifier

        return GeometricVerifier(**params)
    raise KeyError(f"unknown re-ranker '{name}'; known: {', '.join(RERANKERS)}")


__all__ = ["RERANKERS", "NoReranker", "Reranker", "build_reranker"]
