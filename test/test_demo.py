"""The README's first command: the demo on the rendered 3-D world finds real revisits, gives
no false closure a pose, and its pose graph takes out most of the odometry drift; the ROS
graph and the in-process pipeline agree. (Small images here to keep CI short; the README
quotes the default 640x480 run.)"""

from __future__ import annotations

import functools
import os
import re
import subprocess

from ros_processes import executable, private_domain_id

SMALL = ("--size", "320", "240")


@functools.cache
def _run_demo(*args: str) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [executable("demo"), *SMALL, "--domain-id", str(private_domain_id(8)), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _summary(out: str) -> tuple[int, int, int]:
    m = re.search(r"summary: (\d+) loop closures, (\d+) true, (\d+) false", out)
    assert m, f"no summary line in demo output:\n{out[-2000:]}"
    return tuple(int(g) for g in m.groups())


def _ape(out: str) -> tuple[float, float]:
    m = re.search(r"APE RMSE: odometry ([\d.]+) m -> with loop closures ([\d.]+) m", out)
    assert m, f"no APE line in demo output:\n{out[-2000:]}"
    return float(m.group(1)), float(m.group(2))


def test_demo_through_the_ros_graph_finds_loops_and_corrects_drift():
    out = _run_demo()
    total, true, false = _summary(out)
    assert true >= 80 and false <= 0.05 * total
    false_lines = [line for line in out.splitlines() if "[FALSE]" in line]
    assert all(line.endswith("pose: none") for line in false_lines), false_lines
    before, after = _ape(out)
    assert after <= 0.4 * before


def test_offline_demo_matches_the_ros_graph_result():
    ros, offline = _run_demo(), _run_demo("--offline")
    assert _summary(offline) == _summary(ros)  # same core code on both paths, lock-step playback
    assert _ape(offline) == _ape(ros)
