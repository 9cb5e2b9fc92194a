"""Bring up the vpr_ros loop-closure graph: descriptor node -> re-ranker -> loop-closure node.

    ros2 launch vpr_ros loop_closure.launch.py model:=image image_topic:=/camera/image_raw

Parameters come from config/<model>.yaml unless params_file:= is given; launch arguments
override the file. Without ros2 launch, `ros2 run vpr_ros vpr_graph --ros-args ...` runs the
same nodes in one process.

The descriptor and re-ranker nodes are lifecycle nodes that configure and activate themselves
(autostart:=true, as yolo_ros does). With autostart:=false they wait in 'unconfigured' for a
lifecycle manager or `ros2 lifecycle set /descriptor_node configure` / `activate`.
map_path:=DIR keeps the keyframe map across runs; docs/operations.md explains the files,
services and diagnostics.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from vpr_ros.node_parameters import NODE_PARAMETERS
from vpr_ros.rerank.registry import reranker_names  # names only: imports no re-ranker code


def _launch_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _from_table(name: str, description: str | None = None):
    """A launch argument for a node-only parameter: default and meaning from its table row."""
    row = NODE_PARAMETERS[name]
    return (name, _launch_value(row.default), description or row.description)


# Launch-only arguments first, then node parameters (defaults from vpr_ros/node_parameters.py).
ARGUMENTS = [
    ("model", "image", "descriptor model: image, pairvpr, transvpr, salad, regvpr, mobilenetv2"),
    ("weights", "", "checkpoint path (empty: cache dir, then the official URL)"),
    (
        "reranker",
        "",
        f"{', '.join(reranker_names())} (docs/reranking.md: which models each needs); '' = params file",
    ),
    ("device", "", "auto, cpu or cuda ('' = params file, default auto)"),
    ("params_file", "", "YAML parameters file (default config/<model>.yaml)"),
    ("namespace", "", "namespace for all nodes"),
    ("localization_only", "false", "query the saved map without adding keyframes"),
    ("respawn", "true", "restart a node process that exits unexpectedly (after 2 s)"),
    ("pose_graph", "false", "also run the reference back end (GTSAM pose_graph_node; needs odom_topic)"),
    _from_table("camera_extrinsics", "camera optical frame in base_frame: '[x, y, z, qx, qy, qz, qw]'"),
    *(
        _from_table(name)
        for name in (
            "image_topic",
            "compressed",
            "camera_info_topic",
            "depth_topic",
            "odom_topic",
            "base_frame",
            "image_reliability",
            "map_path",
            "publish_debug_image",
        )
    ),
    _from_table("autostart", "descriptor and re-ranker activate themselves (false: lifecycle manager)"),
]


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    params_file = arg["params_file"] or os.path.join(
        get_package_share_directory("vpr_ros"), "config", f"{arg['model']}.yaml"
    )
    overrides = {
        "model": arg["model"],
        "weights": arg["weights"],
        "device": arg["device"],
        "reranker": arg["reranker"],
    }
    camera = {
        "image_topic": arg["image_topic"],
        "compressed": arg["compressed"].lower() == "true",
        "camera_info_topic": arg["camera_info_topic"],
        "depth_topic": arg["depth_topic"],
        "odom_topic": arg["odom_topic"],
        "image_reliability": arg["image_reliability"],
        "base_frame": arg["base_frame"],
    }
    if extrinsics := [float(v) for v in arg["camera_extrinsics"].strip("[] ").split(",") if v.strip()]:
        camera["camera_extrinsics"] = extrinsics
    ns = arg["namespace"]
    autostart = {"autostart": arg["autostart"].lower() == "true"}
    persistence = {
        "map_path": arg["map_path"],
        "localization_only": arg["localization_only"].lower() == "true",
    }
    debug = {"publish_debug_image": arg["publish_debug_image"].lower() == "true"}
    # A node that dies (it should not: every callback is guarded) comes back; the map survives.
    restart = {"respawn": arg["respawn"].lower() == "true", "respawn_delay": 2.0}

    def model_params(keys):
        # Empty launch arguments leave the params file's value in place.
        return {k: v for k, v in overrides.items() if k in keys and v != ""}

    nodes = [
        Node(
            package="vpr_ros",
            executable="descriptor_node",
            namespace=ns,
            output="screen",
            **restart,
            parameters=[
                params_file,
                model_params(("model", "weights", "device", "reranker")),
                camera,
                persistence,
                autostart,
            ],
        ),
        Node(
            package="vpr_ros",
            executable="reranker_node",
            namespace=ns,
            output="screen",
            **restart,
            # model/weights/device: the Pair-VPR pair classifier loads the descriptor checkpoint.
            parameters=[
                params_file,
                model_params(("reranker", "model", "weights", "device")),
                debug,
                autostart,
            ],
        ),
        Node(
            package="vpr_ros",
            executable="loop_closure_node",
            namespace=ns,
            output="screen",
            **restart,
            # reranker: verdicts of any other re-ranker are refused.
            parameters=[params_file, model_params(("reranker",))],
        ),
    ]
    if arg["pose_graph"].lower() == "true":
        nodes.append(
            Node(
                package="vpr_ros",
                executable="pose_graph_node",
                namespace=ns,
                output="screen",
                **restart,
                parameters=[
                    params_file,
                    {"odom_topic": arg["odom_topic"], "base_frame": arg["base_frame"]},
                ],
            )
        )
    return nodes


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=default, description=desc)
            for name, default, desc in ARGUMENTS
        ]
        + [OpaqueFunction(function=_nodes)]
    )
