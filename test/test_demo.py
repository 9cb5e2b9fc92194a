"""The README's first command: the demo finds real revisits and no false loop."""

from __future__ import annotations

import os
import re
import subprocess

from ros_processes import executable, private_domain_id


def _run_demo(*args: str) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [executable("demo"), "--places", "16", "--domain-id", str(private_domain_id(8)), *args],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _summary(out: str) -> tuple[int, int, int]:
    m = re.search(r"summary: (\d+) loop closures, (\d+) true, (\d+) false", out)
    assert m, f"no summary line in demo output:\n{out[-2000:]}"
    return tuple(int(g) for g in m.groups())


def test_demo_through_the_ros_graph_finds_loops_and_no_false_one():
    total, true, false = _summary(_run_demo())
    assert false == 0
    assert true >= 16  # 16 places x 2 laps: 32 frames per lap, 30 s exclusion window


def test_offline_demo_matches_the_ros_graph_result():
    ros = _summary(_run_demo())
    offline = _summary(_run_demo("--offline"))
    assert offline == ros  # same core code on both paths, lock-step playback
