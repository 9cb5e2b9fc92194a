"""Start nodes, spin them, shut down cleanly on SIGINT/SIGTERM, exit 1 on start-up errors.

Lifecycle nodes bring themselves up in their constructors (``autostart``), so a failed model
or map load surfaces here as an exception and the process exits 1 with the reason. On
SIGINT/SIGTERM the executor stops, each node stops its worker and saves its map, and the
process exits 0.
"""

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
    except Exception as exc:  # e.g. a missing checkpoint or a map of another model: say why
        print(f"[vpr_ros] start-up failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
        sys.exit(1)
    # Two threads per node: a long map save or verification never starves image callbacks.
    executor = MultiThreadedExecutor(num_threads=max(4, 2 * len(nodes)))
    for node in nodes:
        executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        _stop_executor(executor)
        for node in nodes:
            node.destroy_node()  # stops workers, saves the map
        rclpy.try_shutdown()
    _exit_now(0)


def _stop_executor(executor) -> None:
    """Stop dispatching and drop callbacks still queued in the executor's thread pool.

    MultiThreadedExecutor.shutdown() otherwise runs every queued callback first: a backlog of
    messages (a re-ranker catching up) measured 2-3 s on SIGINT, over the 2 s budget.
    """
    pool = getattr(executor, "_executor", None)  # rclpy's ThreadPoolExecutor (not public API)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
    executor.shutdown(timeout_sec=0.5)


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown of native modules.

    Everything that matters is done (map saved, nodes destroyed); what is left is freeing
    torch, FAISS and DDS memory, which takes 1-2 s on a small CPU and would push a SIGINT
    shutdown past its 2 s budget. Python-level exit handlers (temporary folders, log
    flushing) still run.
    """
    import atexit
    import os

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
