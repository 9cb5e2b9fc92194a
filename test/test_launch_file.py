"""launch/loop_closure.launch.py against stand-ins of the launch / launch_ros API.

launch_ros does not exist on these machines, so the real API is replaced by small classes
that record what the file builds: the arguments it declares and the nodes it starts.
"""

from __future__ import annotations

import runpy
import sys
import types
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


@pytest.fixture
def launch_file(monkeypatch):
    stubs = {
        "launch": {"LaunchDescription": _Recorder},
        "launch.actions": {"DeclareLaunchArgument": _Recorder, "OpaqueFunction": _Recorder},
        "launch.substitutions": {"LaunchConfiguration": _LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": _Recorder},
        "ament_index_python": {},
        "ament_index_python.packages": {"get_package_share_directory": lambda pkg: str(REPO_ROOT)},
    }
    for name, attrs in stubs.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    return runpy.run_path(str(REPO_ROOT / "launch" / "loop_closure.launch.py"))


def _nodes(module, **overrides):
    desc = module["generate_launch_description"]()
    entities = desc.args[0]
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities if "default_value" in e.kwargs}
    context = dict(declared, **overrides)
    opaque = [e for e in entities if "function" in e.kwargs][0]
    return declared, {n.kwargs["executable"]: n for n in opaque.kwargs["function"](context)}


def test_declares_the_documented_arguments(launch_file):
    declared, _ = _nodes(launch_file)
    for name in ("model", "image_topic", "reranker", "device", "params_file", "weights", "compressed"):
        assert name in declared
    assert declared["model"] == "image"


def test_model_picks_its_config_file_and_starts_the_three_nodes(launch_file):
    _, nodes = _nodes(launch_file, model="mobilenetv2", image_topic="/cam/image_raw")
    assert set(nodes) == {"descriptor_node", "reranker_node", "loop_closure_node"}
    params = nodes["descriptor_node"].kwargs["parameters"]
    params_file = Path(params[0])
    assert params_file == REPO_ROOT / "config" / "mobilenetv2.yaml" and params_file.is_file()
    merged = {k: v for p in params[1:] for k, v in p.items()}
    assert merged["model"] == "mobilenetv2" and merged["image_topic"] == "/cam/image_raw"
    assert "reranker" not in merged and "device" not in merged  # empty: the file decides
    file_params = yaml.safe_load(params_file.read_text())["/**"]["ros__parameters"]
    assert file_params["model"] == "mobilenetv2"


def test_explicit_arguments_override_the_file(launch_file):
    _, nodes = _nodes(launch_file, reranker="none", device="cpu", params_file="/tmp/my.yaml")
    for name in ("descriptor_node", "reranker_node"):
        params = nodes[name].kwargs["parameters"]
        assert params[0] == "/tmp/my.yaml"
        merged = {k: v for p in params[1:] for k, v in p.items()}
        assert merged["reranker"] == "none" and merged["device"] == "cpu"
    # The loop-closure node refuses verdicts of other re-rankers: it must know which one runs.
    assert nodes["loop_closure_node"].kwargs["parameters"] == ["/tmp/my.yaml", {"reranker": "none"}]


@pytest.mark.parametrize("config", sorted((REPO_ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_is_valid_for_the_pipeline(config):
    from vpr_ros.config import load_config
    from vpr_ros.models import MODELS

    cfg = load_config(config)
    assert cfg.model == config.stem and cfg.model in MODELS


def test_node_parameter_arguments_take_the_table_defaults_and_nodes_respawn(launch_file):
    from vpr_ros.node_parameters import NODE_PARAMETERS

    declared, nodes = _nodes(launch_file)
    for name, default in declared.items():
        if name in NODE_PARAMETERS:
            row = NODE_PARAMETERS[name].default
            assert default == (str(row).lower() if isinstance(row, bool) else str(row)), name
    assert all(node.kwargs["respawn"] is True for node in nodes.values())
    _, nodes = _nodes(launch_file, respawn="false")
    assert not any(node.kwargs["respawn"] for node in nodes.values())


def test_pose_graph_and_camera_extrinsics_arguments(launch_file):
    _, nodes = _nodes(launch_file)
    assert "pose_graph_node" not in nodes
    merged = {k: v for p in nodes["descriptor_node"].kwargs["parameters"][1:] for k, v in p.items()}
    assert "camera_extrinsics" not in merged and merged["base_frame"] == "base_link"
    _, nodes = _nodes(
        launch_file,
        pose_graph="true",
        odom_topic="/odom",
        camera_extrinsics="[0.2, 0, 1.2, -0.5, 0.5, -0.5, 0.5]",
    )
    graph = nodes["pose_graph_node"].kwargs["parameters"][1]
    assert graph == {"odom_topic": "/odom", "base_frame": "base_link"}
    merged = {k: v for p in nodes["descriptor_node"].kwargs["parameters"][1:] for k, v in p.items()}
    assert merged["camera_extrinsics"] == [0.2, 0.0, 1.2, -0.5, 0.5, -0.5, 0.5]
