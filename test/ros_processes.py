"""Start vpr_ros node executables as real processes on a private ROS domain (test helper)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def private_domain_id(offset: int = 0) -> int:
    """A ROS_DOMAIN_ID for this test run: 10 per pytest process (``offset`` 0-9), in 10-59.

    Kept below 100: DDS ports of higher domains fall in Linux's ephemeral port range, where
    the large-data transport's TCP connections can take them. Replay (evaluation) uses 60-89.
    """
    if not 0 <= offset <= 9:
        raise ValueError("domain offset must be 0-9")
    return 10 + 10 * (os.getpid() % 5) + offset


def executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"'{name}' not on PATH: build the package and `source tools/env.sh` (make test does)"
        )
    return path


class NodeProcess:
    """One node executable; output goes to a temp file so a full pipe can never block it."""

    def __init__(self, name: str, args: list[str], domain_id: int):
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1")
        self.name = name
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"{name}_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [executable(name), *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
