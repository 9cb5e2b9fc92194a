"""Every pipeline parameter, its default and its meaning: the one home for parameters.

The ROS nodes declare their parameters from this table (same names, defaults and
descriptions) and the offline tools read the same YAML files, so a params file tuned on a
bag replay works unchanged on the robot. A re-ranker's own parameters
(``<prefix>_<field>``) are declared by its parameter dataclass next to its class and
gathered here from the re-ranker registry.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .node_parameters import node_only_parameter_names
from .rerank import registry as rerankers  # cheap: re-ranker modules load on first use

# Parameters that only the ROS nodes use (topics, QoS, persistence...; node_parameters.py);
# offline tools accept and ignore them so that one params file serves both.
ROS_NODE_PARAMETERS = node_only_parameter_names()


def _p(
    default: Any,
    description: str,
    range: tuple[float | None, float | None] | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A pipeline parameter: default, meaning, optional inclusive ``range`` (None = open end)
    or allowed ``choices``."""
    metadata: dict[str, Any] = {"description": description}
    if range is not None:
        metadata["range"] = range
    if choices is not None:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)


def _default_reranker_params() -> dict[str, Any]:
    return {name: rerankers.get_reranker_spec(name).params() for name in rerankers.reranker_names()}


@dataclass
class PipelineConfig:
    # model
    model: str = _p(
        "image", "descriptor model registry name (image, pairvpr, transvpr, salad, regvpr, mobilenetv2)"
    )
    weights: str = _p("", "checkpoint path; empty: cache dir, installed package, then official URL")
    device: str = _p("auto", "auto, cpu or cuda (cuda:N)")
    precision: str = _p("fp32", "fp32, fp16 or bf16 (reduced precision only on CUDA)")
    # input
    max_image_pixels: int = _p(
        4096 * 4096,
        "images with more pixels are refused before decoding (decompression bombs; 0 = no limit)",
        (0, None),
    )
    # keyframe gate
    keyframe_min_period: float = _p(0.5, "minimum seconds (message time) between keyframes", (0.0, None))
    keyframe_min_translation: float = _p(
        0.0, "with odometry: minimum metres moved between keyframes (0 = off)", (0.0, None)
    )
    keyframe_min_rotation_deg: float = _p(
        0.0, "with odometry: minimum degrees turned between keyframes (0 = off)", (0.0, 180.0)
    )
    # retrieval
    top_k: int = _p(5, "candidates retrieved from the map per keyframe", (1, 1000))
    exclude_recent_keyframes: int = _p(20, "newest keyframes never offered as loop candidates", (0, None))
    exclude_recent_seconds: float = _p(
        30.0, "keyframes newer than this many seconds are never candidates", (0.0, None)
    )
    exclude_recent_distance_m: float = _p(
        20.0,
        "with odometry: keyframes less than this many metres of path (summed keyframe to keyframe) "
        "before the query are never candidates (0 = off)",
        (0.0, None),
    )
    stationary_similarity: float = _p(
        0.95,
        "without odometry: a keyframe at least this similar to the previous one continues its "
        "stationary run, and the query's run is never a candidate (1 = off)",
        (0.0, 1.0),
    )
    index_factory: str = _p(
        "Flat", "FAISS index_factory string over inner product (Flat, HNSW32, IVF1024,PQ64)"
    )
    map_device: str = _p("auto", "FAISS index on auto (GPU when faiss-gpu and CUDA exist), cpu or cuda")
    localization_only: bool = _p(
        False, "query the map without adding keyframes (relocalise against a map saved earlier)"
    )
    # verification
    reranker: str = _p("geometric", "re-ranker registry name")  # descriptions() lists them
    verification_image_width: int = _p(
        640, "keyframe images are downscaled to this width for verification", (32, 8192)
    )
    verification_upscale: bool = _p(
        True, "narrower keyframe images are enlarged to verification_image_width (small cameras)"
    )
    feature_ram_budget_mb: float = _p(
        512.0, "RAM for re-ranking features; older keyframes spill to disk", (0.0, None)
    )
    feature_fp16: bool = _p(False, "store float local features as float16")
    feature_spill_dir: str = _p("", "folder for features past the RAM budget (empty: a temporary folder)")
    # Every registered re-ranker's parameters (its spec's frozen params dataclass), by re-ranker
    # name. Not a parameter itself: its fields are, as <prefix>_<field> (from_dict, to_dict).
    all_reranker_params: dict[str, Any] = field(
        default_factory=_default_reranker_params, metadata={"parameter": False}
    )
    # decision
    min_similarity: float = _p(0.0, "minimum global similarity of a loop closure")
    min_reranker_score: float = _p(-math.inf, "minimum re-ranker score (inliers for geometric)")
    consistency_mode: str = _p(
        "neighbours",
        "neighbours: recent queries matched near the same keyframes; sequence: a run of queries "
        "matched a run of map keyframes in order, at a steady id offset",
        choices=("neighbours", "sequence"),
    )
    consistency: int = _p(
        2, "neighbours mode: consecutive agreeing keyframes needed (1 = accept at once)", (1, 100)
    )
    sequence_length: int = _p(
        4, "sequence mode: query keyframes in the matched run (1 = accept at once)", (1, 100)
    )
    consistency_id_tolerance: int = _p(
        3, "match ids of agreeing keyframes may differ by this plus the query gap", (0, None)
    )
    consistency_max_query_gap: int = _p(3, "how many keyframes back agreement is looked for", (1, 1000))
    accept_score: float = _p(math.inf, "re-ranker score that skips the consistency wait (inf = never)")
    # transport
    queue_size: int = _p(5, "frames buffered per node before the oldest is dropped", (1, 1000))

    @classmethod
    def generic_parameter_names(cls) -> list[str]:
        """The parameters that are fields here (not a re-ranker's own)."""
        return [f.name for f in fields(cls) if f.metadata.get("parameter", True)]

    @classmethod
    def parameter_names(cls) -> list[str]:
        """Every parameter: the generic ones and every registered re-ranker's."""
        return list(cls.descriptions())

    @classmethod
    def descriptions(cls) -> dict[str, str]:
        out = {}
        for f in fields(cls):
            if f.metadata.get("parameter", True):
                out[f.name] = f.metadata["description"]
            else:
                out.update({name: fd.metadata["description"] for name, (_, fd) in _reranker_table()})
        specs = [rerankers.get_reranker_spec(n) for n in rerankers.reranker_names()]
        out["reranker"] = "; ".join(f"{s.name}: {s.description}" for s in specs)
        return out

    @classmethod
    def parameter_metadata(cls) -> dict[str, dict]:
        """Every parameter's field metadata (description, optional range / choices)."""
        out = {}
        for f in fields(cls):
            if f.metadata.get("parameter", True):
                out[f.name] = dict(f.metadata)
            else:
                out.update({name: dict(fd.metadata) for name, (_, fd) in _reranker_table()})
        return out

    @classmethod
    def from_dict(cls, values: dict) -> PipelineConfig:
        generic = set(cls.generic_parameter_names())
        table = dict(_reranker_table())
        values = {k: v for k, v in values.items() if k not in ROS_NODE_PARAMETERS}
        unknown = sorted(set(values) - generic - set(table))
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
        cfg = cls()
        metadata = {f.name: f.metadata for f in fields(cls)}
        changes: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name in generic:
                setattr(cfg, name, _convert(name, value, getattr(cfg, name), metadata[name]))
            else:
                spec, f = table[name]
                changes.setdefault(spec.name, {})[f.name] = _convert(name, value, f.default, f.metadata)
        for reranker, values_of_one in changes.items():
            cfg.all_reranker_params[reranker] = dataclasses.replace(
                cfg.reranker_params(reranker), **values_of_one
            )
        return cfg

    def to_dict(self) -> dict:
        """Every parameter by name (re-rankers' as <prefix>_<field>): from_dict's input."""
        out = {}
        for f in fields(self):
            if f.metadata.get("parameter", True):
                out[f.name] = getattr(self, f.name)
            else:
                for name, (spec, fd) in _reranker_table():
                    out[name] = getattr(self.reranker_params(spec.name), fd.name)
        return out

    def with_values(self, **values) -> PipelineConfig:
        """A copy with parameters changed by name, re-rankers' too (``geometric_min_inliers=8``)."""
        return type(self).from_dict({**self.to_dict(), **values})

    def reranker_params(self, name: str | None = None) -> Any:
        """The parameters (its spec's params dataclass) of re-ranker ``name``, default the selected one."""
        spec = rerankers.get_reranker_spec(name or self.reranker)
        params = self.all_reranker_params.get(spec.name)
        return params if params is not None else spec.params()  # registered after this config


def _reranker_table():
    return rerankers.reranker_parameters().items()


def _convert(name: str, value: Any, default: Any, metadata=None) -> Any:
    """``value`` as the type of ``default``, within the field's range / choices."""
    try:
        value = type(default)(value) if not isinstance(default, bool) else _to_bool(value)
    except (TypeError, ValueError):
        raise ValueError(f"parameter '{name}': cannot use {value!r} as {type(default).__name__}") from None
    metadata = metadata or {}
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"parameter '{name}': {value!r} is not one of {', '.join(map(str, choices))}")
    low, high = metadata.get("range", (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ValueError(f"parameter '{name}': {value!r} is outside {bounds}")
    return value


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ValueError(value)
    return bool(value)


def read_params_file(path: str | Path | None) -> dict:
    """Parameters from a ROS 2 params YAML (``/**: ros__parameters: ...`` or ``node: ros__parameters``).

    All ``ros__parameters`` sections are merged (wildcard first, then named nodes), which is
    what a single-process pipeline needs.
    """
    if not path:
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    merged: dict = {}
    sections = sorted(data.items(), key=lambda kv: kv[0] not in ("/**", "**"))
    for _, section in sections:
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            merged.update(section["ros__parameters"])
    if not merged and data:
        merged = data  # a plain mapping of parameters is accepted too
    return merged


def load_config(params_file: str | Path | None = None, **overrides) -> PipelineConfig:
    values = read_params_file(params_file)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PipelineConfig.from_dict(values)


def default_params_file(model: str) -> Path:
    """config/<model>.yaml: the installed share dir (colcon), else the source tree (pip -e)."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("vpr_ros")) / "config")
    except Exception:  # no ament index (plain pip install): fall back to the source tree
        pass
    candidates.append(Path(__file__).resolve().parents[1] / "config")
    for folder in candidates:
        if (folder / f"{model}.yaml").is_file():
            return folder / f"{model}.yaml"
    raise FileNotFoundError(f"no config/{model}.yaml found (looked in {', '.join(map(str, candidates))})")
