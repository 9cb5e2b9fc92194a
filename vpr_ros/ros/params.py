"""Declare node parameters from the two tables: PipelineConfig (with the re-rankers') and
node_parameters.NODE_PARAMETERS. Same names, defaults, descriptions and numeric ranges."""

from __future__ import annotations

import math
import sys

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.parameter import Parameter

from ..config import PipelineConfig
from ..node_parameters import parameters_of

_INT64_MAX = 2**63 - 1


def descriptor_for(description: str, default, value_range=None, choices=None) -> ParameterDescriptor:
    """A ParameterDescriptor; an inclusive ``value_range`` becomes a ROS integer/float range
    (rcl then refuses out-of-range sets), ``choices`` are listed in the constraints text."""
    desc = ParameterDescriptor(description=description)
    if choices:
        desc.additional_constraints = "one of: " + ", ".join(map(str, choices))
    if value_range is None or isinstance(default, bool):
        return desc
    low, high = value_range
    if isinstance(default, int):
        low = -_INT64_MAX if low is None else int(low)
        high = _INT64_MAX if high is None else int(high)
        desc.integer_range = [IntegerRange(from_value=low, to_value=high, step=0)]
    elif isinstance(default, float):
        low = -sys.float_info.max if low is None else float(low)
        high = sys.float_info.max if high is None else float(high)
        desc.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    return desc


def declare_pipeline_parameters(node, names: list[str]) -> None:
    defaults = PipelineConfig().to_dict()  # re-rankers' parameters too
    metadata = PipelineConfig.parameter_metadata()
    descriptions = PipelineConfig.descriptions()
    for name in names:
        default = defaults[name]
        if isinstance(default, float) and math.isinf(default):
            default = float(default)  # ROS accepts inf for double parameters
        meta = metadata[name]
        node.declare_parameter(
            name, default, descriptor_for(descriptions[name], default, meta.get("range"), meta.get("choices"))
        )


def declare_node_parameters(node, node_name: str) -> None:
    """The node-only parameters (topics, persistence, diagnostics...) of ``node_name``. An
    empty-list default is declared as an unset double array (rclpy cannot type ``[]``)."""
    for p in parameters_of(node_name):
        default = Parameter.Type.DOUBLE_ARRAY if p.default == [] else p.default
        node.declare_parameter(p.name, default, descriptor_for(p.description, p.default, p.range))


def parameter_value(node, name: str):
    """A parameter's value; [] for an unset array parameter (see declare_node_parameters)."""
    try:
        value = node.get_parameter(name).value
    except ParameterUninitializedException:
        return []
    return list(value) if isinstance(value, (list, tuple)) or hasattr(value, "tolist") else value


def read_pipeline_config(node, names: list[str]) -> PipelineConfig:
    return PipelineConfig.from_dict({name: node.get_parameter(name).value for name in names})
