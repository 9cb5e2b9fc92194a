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

ARGUMENTS = [
    ("model", "image", "descriptor model: image, pairvpr, transvpr, salad, regvpr, mobilenetv2"),
    ("weights", "", "checkpoint path (empty: cache dir, then the official URL)"),
    (
        "image_topic",
        "/camera/image_raw",
        "camera topic (sensor_msgs/Image, or CompressedImage with compressed:=true)",
    ),
    ("compressed", "false", "subscribe to sensor_msgs/CompressedImage"),
    ("camera_info_topic", "", "sensor_msgs/CameraInfo topic (enables relative poses)"),
    ("depth_topic", "", "aligned depth image topic (metric relative poses)"),
    ("odom_topic", "", "nav_msgs/Odometry topic (motion keyframe gate, poses)"),
    ("image_reliability", "reliable", "image QoS reliability: reliable or best_effort"),
    (
        "reranker",
        "",
        "geometric, pairvpr (model:=pairvpr), keypatch (patch-token models), none; '' = params file",
    ),
    ("device", "", "auto, cpu or cuda ('' = params file, default auto)"),
    ("params_file", "", "YAML parameters file (default config/<model>.yaml)"),
    ("namespace", "", "namespace for all nodes"),
    ("map_path", "", "map directory: loaded at start, saved on exit and periodically ('' = memory only)"),
    ("localization_only", "false", "query the saved map without adding keyframes"),
    ("publish_debug_image", "false", "re-ranker publishes vpr/debug_image (query, match, inliers)"),
    (
        "autostart",
        "true",
        "descriptor and re-ranker activate themselves (false: leave it to a lifecycle manager)",
    ),
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
    }
    ns = arg["namespace"]
    autostart = {"autostart": arg["autostart"].lower() == "true"}
    persistence = {
        "map_path": arg["map_path"],
        "localization_only": arg["localization_only"].lower() == "true",
    }
    debug = {"publish_debug_image": arg["publish_debug_image"].lower() == "true"}

    def model_params(keys):
        # Empty launch arguments leave the params file's value in place.
        return {k: v for k, v in overrides.items() if k in keys and v != ""}

    return [
        Node(
            package="vpr_ros",
            executable="descriptor_node",
            namespace=ns,
            output="screen",
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
            parameters=[params_file],
        ),
    ]


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=default, description=desc)
            for name, default, desc in ARGUMENTS
        ]
        + [OpaqueFunction(function=_nodes)]
    )
