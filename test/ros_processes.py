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


def private_domain_id() -> int:
    """A ROS_DOMAIN_ID unlikely to collide with other test runs on this machine."""
    return 100 + (os.getpid() % 100)


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
