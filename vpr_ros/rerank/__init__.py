"""Re-rankers: verify retrieval candidates before a loop closure is accepted.

``registry.py`` lists them; each module declares its spec next to its class.
"""

from __future__ import annotations

from .base import NoReranker, Reranker, RerankerContext, RerankerSpec, param
from .features import keyframe_local_features
from .registry import (
    build_reranker,
    get_reranker_spec,
    needed_local_features,
    register_reranker,
    reranker_names,
    reranker_parameters,
    unregister_reranker,
)

__all__ = [
    "NoReranker",
    "Reranker",
    "RerankerContext",
    "RerankerSpec",
    "build_reranker",
    "get_reranker_spec",
    "keyframe_local_features",
    "needed_local_features",
    "param",
    "register_reranker",
    "reranker_names",
    "reranker_parameters",
    "unregister_reranker",
]
