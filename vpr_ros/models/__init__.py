"""Place-recognition models (ROS-free). See ``registry.MODELS`` for the list."""

from .base import InputPolicy, ModelSpec, VPRModel, WeightsSpec
from .registry import MODELS, get_model_spec

__all__ = ["InputPolicy", "ModelSpec", "VPRModel", "WeightsSpec", "MODELS", "get_model_spec"]
