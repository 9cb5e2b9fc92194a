"""Test helpers over vpr_ros.ros.processes: the suite's domain range and the repository root."""

from __future__ import annotations

import os
from pathlib import Path

from vpr_ros.ros.processes import NodeProcess, find_executable, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
executable = find_executable


def private_domain_id(offset: int = 0) -> int:
    """A ROS_DOMAIN_ID for this test run: 10 per pytest process (``offset`` 0-9), in 10-59.

    Replay (evaluation) uses 60-89, so a test and a replay never share a domain.
    """
    if not 0 <= offset <= 9:
        raise ValueError("domain offset must be 0-9")
    return 10 + 10 * (os.getpid() % 5) + offset


__all__ = ["REPO_ROOT", "NodeProcess", "executable", "private_domain_id", "wait_until"]
