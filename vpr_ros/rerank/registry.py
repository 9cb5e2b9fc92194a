"""The one table of re-rankers. Nothing outside vpr_ros/rerank/ knows a re-ranker by name.

Each re-ranker module declares its ``RerankerSpec`` (``SPEC``) next to its class. The rows
here are ``"module:attribute"`` strings so that importing the registry stays cheap and a
re-ranker's code (Pair-VPR pulls in torch) is only imported when its spec is first asked
for. ``register_reranker`` adds one at run time (a plugin, a test): its parameters are then
accepted by ``PipelineConfig`` and declared by re-ranker nodes constructed afterwards.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .base import RerankerContext, RerankerSpec

if TYPE_CHECKING:
    from ..config import PipelineConfig
    from ..feature_store import FeatureStore
    from .base import Reranker

# name -> "module:attribute" under vpr_ros.rerank until first asked for, then the spec itself.
_SPECS: dict[str, RerankerSpec | str] = {
    "geometric": "geometric:SPEC",
    "pairvpr": "pairvpr:SPEC",
    "keypatch": "keypatch:SPEC",
    "none": "base:SPEC",
}
_BUILTIN = frozenset(_SPECS)
# <prefix>_<field> -> (spec, field), built on first use and dropped when the table changes.
_parameters: dict[str, tuple[RerankerSpec, dataclasses.Field]] | None = None


def reranker_names() -> tuple[str, ...]:
    """Registered re-rankers, built-ins first (no module is imported)."""
    return tuple(_SPECS)


def get_reranker_spec(name: str) -> RerankerSpec:
    """The registry entry for ``name`` or fail with the list of known re-rankers."""
    try:
        spec = _SPECS[name]
    except KeyError:
        raise KeyError(f"unknown re-ranker '{name}'; known re-rankers: {', '.join(_SPECS)}") from None
    if isinstance(spec, str):
        module_name, attribute = spec.split(":")
        spec = getattr(importlib.import_module(f"{__package__}.{module_name}"), attribute)
        if spec.name != name:
            raise RuntimeError(f"registry row '{name}' points at the spec of '{spec.name}'")
        _SPECS[name] = spec
    return spec


def reranker_parameters() -> dict[str, tuple[RerankerSpec, dataclasses.Field]]:
    """Every registered re-ranker's parameters: ``<prefix>_<field>`` -> (spec, field)."""
    global _parameters
    if _parameters is None:
        table = {}
        for name in _SPECS:
            spec = get_reranker_spec(name)
            for f in dataclasses.fields(spec.params):
                table[f"{spec.parameter_prefix}_{f.name}"] = (spec, f)
        _parameters = table
    return dict(_parameters)


def reranker_parameter_names() -> list[str]:
    return list(reranker_parameters())


def _check(spec: RerankerSpec) -> None:
    if not spec.name or not spec.parameter_prefix.isidentifier():
        raise ValueError(f"re-ranker name/prefix must be an identifier, got '{spec.parameter_prefix}'")
    if not (isinstance(spec.params, type) and dataclasses.is_dataclass(spec.params)):
        raise TypeError(f"re-ranker '{spec.name}': params must be a dataclass type")
    for f in dataclasses.fields(spec.params):
        # The default is what from_dict converts YAML values to, and what the nodes declare.
        if f.default is dataclasses.MISSING or "description" not in f.metadata:
            raise ValueError(
                f"re-ranker '{spec.name}': parameter field '{f.name}' needs a default and a "
                "description (make it with vpr_ros.rerank.base.param)"
            )


def register_reranker(spec: RerankerSpec, replace: bool = False) -> RerankerSpec:
    """Add ``spec`` (``replace``: over a registered one of the same name); returns it."""
    global _parameters
    from ..config import PipelineConfig  # config imports this module: import it late

    if spec.name in _SPECS and not replace:
        raise ValueError(f"re-ranker '{spec.name}' is already registered")
    _check(spec)
    others = {n for n, (s, _) in reranker_parameters().items() if s.name != spec.name}
    names = {f"{spec.parameter_prefix}_{f.name}" for f in dataclasses.fields(spec.params)}
    clashes = sorted(names & (others | set(PipelineConfig.generic_parameter_names())))
    if clashes:
        raise ValueError(f"re-ranker '{spec.name}': parameter name(s) already taken: {', '.join(clashes)}")
    _SPECS[spec.name] = spec
    _parameters = None
    return spec


def unregister_reranker(name: str) -> None:
    """Remove a re-ranker added with ``register_reranker`` (built-ins stay)."""
    global _parameters
    if name in _BUILTIN:
        raise ValueError(f"'{name}' is a built-in re-ranker")
    get_reranker_spec(name)  # the usual error for an unknown name
    del _SPECS[name]
    _parameters = None


def needed_local_features(reranker: str, model_local_features: Iterable[str]) -> tuple[str, ...]:
    """The names of the model's local features that ``reranker`` reads (empty: none usable).

    ``model_local_features`` is the registry's ``ModelSpec.local_features``.
    """
    return tuple(get_reranker_spec(reranker).local_features(tuple(model_local_features)))


def build_reranker(
    config: PipelineConfig, feature_store: FeatureStore | None = None, model: Any = None
) -> Reranker:
    """The re-ranker ``config.reranker`` with its parameters from ``config``.

    ``feature_store`` is handed over when the spec uses one; ``model`` (the descriptor stage's)
    when the spec can share one, see ``RerankerSpec.can_share_model``.
    """
    spec = get_reranker_spec(config.reranker)
    context = RerankerContext(
        config,
        feature_store if spec.uses_feature_store else None,
        model if spec.shares_model is not None else None,
    )
    return spec.build(config.reranker_params(), context)
