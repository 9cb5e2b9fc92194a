"""Every node parameter comes from one table, with a description and its range; the README
and docs/parameters.md tables equal the code."""

from __future__ import annotations

import pytest

from vpr_ros.apps import parameter_docs
from vpr_ros.config import PipelineConfig
from vpr_ros.node_parameters import NODE_PARAMETERS, node_only_parameter_names

rclpy = pytest.importorskip("rclpy")

from ros_processes import private_domain_id  # noqa: E402
from vpr_ros.ros.params import parameter_value  # noqa: E402

# Parameters rclpy declares on every node by itself.
RCLPY_BUILTIN = {"use_sim_time", "start_type_description_service"}


def test_readme_and_docs_tables_equal_the_code():
    assert parameter_docs.main(["--check"]) == 0


def test_a_stale_table_is_found(tmp_path):
    readme = tmp_path / "README.md"
    text = (parameter_docs.REPO_ROOT / "README.md").read_text()
    readme.write_text(text.replace("| `top_k` | `5` |", "| `top_k` | `7` |"))
    assert "| `top_k` | `7` |" in readme.read_text()
    assert parameter_docs.main(["--check", str(readme)]) == 1
    assert parameter_docs.main([str(readme)]) == 0  # rewritten ...
    assert parameter_docs.main(["--check", str(readme)]) == 0  # ... and now current
    assert "| `top_k` | `5` |" in readme.read_text()


def test_node_only_and_pipeline_names_never_clash():
    assert not set(NODE_PARAMETERS) & set(PipelineConfig.parameter_names())
    assert node_only_parameter_names() >= set(NODE_PARAMETERS)


@pytest.fixture
def nodes():
    from rclpy.parameter import Parameter

    from vpr_ros.ros.backend_adapter_node import BackendAdapterNode
    from vpr_ros.ros.descriptor_node import DescriptorNode
    from vpr_ros.ros.loop_closure_node import LoopClosureNode
    from vpr_ros.ros.pose_graph_node import PoseGraphNode
    from vpr_ros.ros.reranker_node import RerankerNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=private_domain_id(6))
    made = []
    try:
        # autostart false: nothing is loaded, only the parameters are declared.
        off = [Parameter("autostart", value=False)]
        made.append(DescriptorNode(context=context, parameter_overrides=off))
        made.append(RerankerNode(context=context, parameter_overrides=off))
        made.append(LoopClosureNode(context=context))
        odom = [Parameter("odom_topic", value="odom")]  # required by the pose graph
        made.append(PoseGraphNode(context=context, parameter_overrides=odom))
        made.append(BackendAdapterNode(context=context))
        yield made
    finally:
        for node in made:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


# Set by the fixture (so no node loads anything), hence not at their table default.
OVERRIDDEN = {(n, "autostart") for n in ("descriptor_node", "reranker_node")} | {
    ("pose_graph_node", "odom_topic")
}


def test_every_parameter_of_every_node_has_a_description_and_its_table_default(nodes):
    defaults = {**PipelineConfig().to_dict(), **{p.name: p.default for p in NODE_PARAMETERS.values()}}
    seen = set()
    for node in nodes:
        names = [n for n in node._parameters if n not in RCLPY_BUILTIN]
        assert names, node.get_name()
        for name, desc in zip(names, node.describe_parameters(names), strict=True):
            assert desc.description.strip(), f"{node.get_name()}: '{name}' has no description"
            assert name in defaults, f"{node.get_name()}: '{name}' is in no parameter table"
            value = parameter_value(node, name)
            if (node.get_name(), name) not in OVERRIDDEN:
                assert value == defaults[name], (node.get_name(), name, value)
            seen.add(name)
    # Every row of the node-only table is declared by the nodes it names.
    assert set(NODE_PARAMETERS) <= seen


def test_ranges_are_declared_and_enforced(nodes):
    from rclpy.parameter import Parameter

    descriptor, reranker, loop, *_ = nodes
    (top_k,) = descriptor.describe_parameters(["top_k"])
    assert (top_k.integer_range[0].from_value, top_k.integer_range[0].to_value) == (1, 1000)
    assert not descriptor.set_parameters([Parameter("top_k", value=0)])[0].successful
    assert descriptor.set_parameters([Parameter("top_k", value=7)])[0].successful
    assert not loop.set_parameters([Parameter("diagnostics_period", value=0.0)])[0].successful
    (ratio,) = reranker.describe_parameters(["geometric_ratio"])
    assert ratio.floating_point_range, "re-ranker parameter ranges reach ROS too"


def test_exclusion_and_consistency_parameters_reach_their_nodes(nodes):
    descriptor, _, loop, *_ = nodes
    for name in ("exclude_recent_distance_m", "stationary_similarity"):
        assert descriptor.has_parameter(name), name
    for name in ("consistency_mode", "sequence_length"):
        assert loop.has_parameter(name), name
    (mode,) = loop.describe_parameters(["consistency_mode"])
    assert mode.additional_constraints == "one of: neighbours, sequence"
    assert loop.config.consistency_mode == "neighbours" and loop.decider.mode == "neighbours"
    (similarity,) = descriptor.describe_parameters(["stationary_similarity"])
    bounds = similarity.floating_point_range[0]
    assert (bounds.from_value, bounds.to_value) == (0.0, 1.0)
