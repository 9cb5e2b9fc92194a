"""Every pipeline parameter, its default and its meaning: the one home for parameters.

The ROS nodes declare their parameters from this table (same names, defaults and
descriptions) and the offline tools read the same YAML files, so a params file tuned on a
bag replay works unchanged on the robot.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

# Parameters that only the ROS nodes use (topics, QoS); offline tools accept and ignore them
# so that one params file serves both.
ROS_NODE_PARAMETERS = frozenset(
    {
        "image_topic",
        "compressed",
        "camera_info_topic",
        "depth_topic",
        "odom_topic",
        "image_reliability",
        "camera_name",
        "use_sim_time",
        "publish_rejected",
        "log_rejected",
        "map_path",
        "map_save_period",
        "autostart",
        "diagnostics_period",
        "publish_debug_image",
        "marker_frame_id",
    }
)


def _p(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass
class PipelineConfig:
    # model
    model: str = _p(
        "image", "descriptor model registry name (image, pairvpr, transvpr, salad, regvpr, mobilenetv2)"
    )
    weights: str = _p("", "checkpoint path; empty: cache dir, installed package, then official URL")
    device: str = _p("auto", "auto, cpu or cuda (cuda:N)")
    precision: str = _p("fp32", "fp32, fp16 or bf16 (reduced precision only on CUDA)")
    # keyframe gate
    keyframe_min_period: float = _p(0.5, "minimum seconds (message time) between keyframes")
    keyframe_min_translation: float = _p(
        0.0, "with odometry: minimum metres moved between keyframes (0 = off)"
    )
    keyframe_min_rotation_deg: float = _p(
        0.0, "with odometry: minimum degrees turned between keyframes (0 = off)"
    )
    # retrieval
    top_k: int = _p(5, "candidates retrieved from the map per keyframe")
    exclude_recent_keyframes: int = _p(20, "newest keyframes never offered as loop candidates")
    exclude_recent_seconds: float = _p(30.0, "keyframes newer than this many seconds are never candidates")
    index_factory: str = _p(
        "Flat", "FAISS index_factory string over inner product (Flat, HNSW32, IVF1024,PQ64)"
    )
    map_device: str = _p("auto", "FAISS index on auto (GPU when faiss-gpu and CUDA exist), cpu or cuda")
    localization_only: bool = _p(
        False, "query the map without adding keyframes (relocalise against a map saved earlier)"
    )
    # verification
    reranker: str = _p(
        "geometric",
        "geometric, pairvpr (needs model pairvpr), keypatch (needs a model with patch tokens) or none",
    )
    verification_image_width: int = _p(640, "keyframe images are downscaled to this width for verification")
    geometric_feature: str = _p("sift", "sift or orb")
    geometric_max_features: int = _p(1000, "local features per keyframe")
    geometric_ratio: float = _p(0.8, "Lowe ratio test threshold")
    geometric_min_matches: int = _p(12, "minimum mutual matches before RANSAC")
    geometric_min_inliers: int = _p(20, "minimum RANSAC inliers for a pass")
    geometric_ransac_threshold_px: float = _p(2.0, "RANSAC threshold in pixels of the verification image")
    feature_ram_budget_mb: float = _p(512.0, "RAM for re-ranking features; older keyframes spill to disk")
    feature_fp16: bool = _p(False, "store float local features as float16")
    feature_spill_dir: str = _p("", "folder for features past the RAM budget (empty: a temporary folder)")
    pairvpr_weights: str = _p(
        "", "Pair-VPR checkpoint for the pair classifier (empty: weights when model is pairvpr, else cache)"
    )
    pairvpr_batch_size: int = _p(16, "candidate pairs per pair-classifier batch (bounds memory)")
    pairvpr_min_score: float = _p(0.0, "minimum pair score s(q,db)+s(db,q) (raw logits) for a pass")
    keypatch_threshold: float = _p(0.02, "key patches: fused attention above this (all patches without one)")
    keypatch_ransac_factor: float = _p(1.5, "homography RANSAC threshold in patch sizes (1.5 x 16 px)")
    keypatch_min_inliers: int = _p(20, "minimum homography inliers for a key-patch pass")
    # decision
    min_similarity: float = _p(0.0, "minimum global similarity of a loop closure")
    min_reranker_score: float = _p(-math.inf, "minimum re-ranker score (inliers for geometric)")
    consistency: int = _p(2, "consecutive agreeing keyframes needed (1 = accept at once)")
    consistency_id_tolerance: int = _p(
        3, "match ids of agreeing keyframes may differ by this plus the query gap"
    )
    consistency_max_query_gap: int = _p(3, "how many keyframes back agreement is looked for")
    accept_score: float = _p(math.inf, "re-ranker score that skips the consistency wait (inf = never)")
    # transport
    queue_size: int = _p(5, "frames buffered per node before the oldest is dropped")

    @classmethod
    def descriptions(cls) -> dict[str, str]:
        return {f.name: f.metadata["description"] for f in fields(cls)}

    @classmethod
    def from_dict(cls, values: dict) -> PipelineConfig:
        known = {f.name: f for f in fields(cls)}
        values = {k: v for k, v in values.items() if k not in ROS_NODE_PARAMETERS}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
        cfg = cls()
        for name, value in values.items():
            default = getattr(cfg, name)
            try:
                value = type(default)(value) if not isinstance(default, bool) else _to_bool(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"parameter '{name}': cannot use {value!r} as {type(default).__name__}"
                ) from None
            setattr(cfg, name, value)
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    def reranker_params(self) -> dict:
        """Constructor arguments of the selected re-ranker."""
        if self.reranker == "geometric":
            return {
                "feature": self.geometric_feature,
                "max_features": self.geometric_max_features,
                "ratio": self.geometric_ratio,
                "min_matches": self.geometric_min_matches,
                "min_inliers": self.geometric_min_inliers,
                "ransac_threshold_px": self.geometric_ransac_threshold_px,
            }
        if self.reranker == "pairvpr":
            # The pair classifier is the descriptor model's own decoder (ViT-B, L or G).
            same = self.model.startswith("pairvpr")
            weights = self.pairvpr_weights or (self.weights if same else "")
            return {
                "model_name": self.model if same else "pairvpr",
                "weights": weights or None,
                "device": self.device,
                "batch_size": self.pairvpr_batch_size,
                "min_score": self.pairvpr_min_score,
            }
        if self.reranker == "keypatch":
            return {
                "threshold": self.keypatch_threshold,
                "ransac_factor": self.keypatch_ransac_factor,
                "min_inliers": self.keypatch_min_inliers,
            }
        return {}


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
