"""Declare node parameters from PipelineConfig (same names, defaults, descriptions)."""

from __future__ import annotations

import math
from dataclasses import fields

from rcl_interfaces.msg import ParameterDescriptor

from ..config import PipelineConfig


def declare_pipeline_parameters(node, names: list[str]) -> None:
    defaults = PipelineConfig()
    descriptions = PipelineConfig.descriptions()
    for name in names:
        default = getattr(defaults, name)
        if isinstance(default, float) and math.isinf(default):
            default = float(default)  # ROS accepts inf for double parameters
        node.declare_parameter(name, default, ParameterDescriptor(description=descriptions[name]))


def read_pipeline_config(node, names: list[str]) -> PipelineConfig:
    return PipelineConfig.from_dict({name: node.get_parameter(name).value for name in names})


ALL_PIPELINE_PARAMETERS = [f.name for f in fields(PipelineConfig)]
