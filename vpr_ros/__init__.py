"""vpr_ros: visual place recognition loop closure for ROS 2.

The package is split in two layers: everything directly under ``vpr_ros`` (models,
weights, keyframe map, re-rankers, loop-closure logic, evaluation) is ROS-free and
importable with plain Python; ``vpr_ros.ros`` holds the thin rclpy nodes.
"""

__version__ = "0.1.0"
