"""Start nodes, spin them, shut down cleanly on SIGINT/SIGTERM, exit 1 on start-up errors."""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor


def run_nodes(node_classes, args=None) -> None:
    rclpy.init(args=args)
    nodes = []
    try:
        for cls in node_classes:
            nodes.append(cls())
    except Exception as exc:  # e.g. a missing checkpoint: say why and exit non-zero
        print(f"[vpr_ros] start-up failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
        sys.exit(1)
    executor = MultiThreadedExecutor(num_threads=max(2, len(nodes)))
    for node in nodes:
        executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in nodes:
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
