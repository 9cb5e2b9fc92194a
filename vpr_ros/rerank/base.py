"""The re-ranker interface and what every re-ranker declares (its ``RerankerSpec``).

A re-ranker module holds its class, a frozen parameter dataclass whose fields (made with
``param``) are the one home of each default and description, and a ``SPEC`` that the
registry (``registry.py``) lists. Parameter ``<field>`` of re-ranker ``<prefix>`` is
``<prefix>_<field>`` in YAML files, on the command line and in ROS.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..types import Candidate, Keyframe, Verification

if TYPE_CHECKING:
    from ..config import PipelineConfig
    from ..feature_store import FeatureStore
    from ..models.base import ModelSpec


class Reranker(Protocol):
    name: str

    def add_keyframe(self, keyframe: Keyframe) -> None:
        """Remember what verification will need about a map keyframe (features, image...)."""

    def verify(self, query: Keyframe, candidates: list[Candidate]) -> list[Verification]:
        """One verdict per candidate, best score first."""

    def reset(self) -> None:
        """Forget every keyframe (a new map session: ids may now mean other images); a loaded
        model stays loaded."""


def param(
    default: Any,
    description: str,
    range: tuple[float | None, float | None] | None = None,
    choices: tuple | None = None,
) -> Any:
    """A parameter field: its default, meaning and, optionally, the inclusive ``range``
    (``None``: open end) or ``choices`` that ``PipelineConfig.from_dict`` enforces."""
    metadata: dict[str, Any] = {"description": description}
    if range is not None:
        metadata["range"] = range
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return field(default=default, metadata=metadata)


@dataclass
class RerankerContext:
    """What a builder gets besides its parameters."""

    config: PipelineConfig  # the pipeline's model, weights and device
    feature_store: FeatureStore | None  # None when the spec uses none
    model: Any = None  # the descriptor stage's loaded model, when the spec can share it


def no_local_features(model_local_features: tuple[str, ...]) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class RerankerSpec:
    """One row of the re-ranker registry: everything the rest of vpr_ros may know about one."""

    name: str
    # A dataclass type; every field has a default made with ``param``.
    params: type
    # (params instance, RerankerContext) -> a Reranker.
    build: Callable[[Any, RerankerContext], Reranker]
    description: str = ""
    # Parameter names are <prefix>_<field>; empty: the name.
    prefix: str = ""
    # The model local features it reads, given the model's ModelSpec.local_features (empty: none
    # usable); the descriptor stage extracts exactly these.
    local_features: Callable[[tuple[str, ...]], tuple[str, ...]] = no_local_features
    # Whether it keeps per-keyframe data in the pipeline's FeatureStore (bounded RAM, spill).
    uses_feature_store: bool = True
    # (params, descriptor ModelSpec) -> whether the descriptor stage's loaded model can stand in
    # for the one it would load (Pair-VPR shares its weights); None: it never loads a model.
    shares_model: Callable[[Any, ModelSpec], bool] | None = None

    @property
    def parameter_prefix(self) -> str:
        return self.prefix or self.name

    def can_share_model(self, params: Any, model_spec: ModelSpec) -> bool:
        return self.shares_model is not None and bool(self.shares_model(params, model_spec))


class NoReranker:
    """Passes retrieval through unchanged: score = global similarity."""

    name = "none"

    def add_keyframe(self, keyframe: Keyframe) -> None:
        pass

    def verify(self, query: Keyframe, candidates: list[Candidate]) -> list[Verification]:
        return [Verification(c, c.similarity, -1, True, "not verified") for c in candidates]

    def reset(self) -> None:
        pass


def sort_verifications(results: list[Verification]) -> list[Verification]:
    """Passed first, then by score, NaN scores last."""
    return sorted(results, key=lambda v: (not v.passed, -(v.score if math.isfinite(v.score) else -math.inf)))


@dataclass(frozen=True)
class NoParams:
    """``none`` has no parameters."""


SPEC = RerankerSpec(
    name="none",
    params=NoParams,
    build=lambda params, context: NoReranker(),
    description="no verification: retrieval similarity is the score",
    uses_feature_store=False,
)
