"""Node executables as separate processes on a chosen ROS domain (replay, demo tests, tools).

Output goes to a log file, never a pipe, so a chatty node can never block on a full pipe.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def private_domain_id(first: int, count: int, slot: int = 0) -> int:
    """A ROS_DOMAIN_ID in [first, first + count) picked by this process id, plus ``slot``.

    Keep domains below 100: DDS ports of higher domains fall in Linux's ephemeral port range,
    where the large-data transport's TCP connections can take them.
    """
    return first + (os.getpid() % count) + slot


def find_executable(name: str) -> str:
    """A vpr_ros executable from the ament index (the installed package), else from PATH."""
    try:
        from ament_index_python.packages import get_package_prefix

        path = Path(get_package_prefix("vpr_ros")) / "lib" / "vpr_ros" / name
        if path.is_file():
            return str(path)
    except Exception:  # no ament index: a plain PATH lookup is all there is
        pass
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"vpr_ros executable '{name}' not found: build the package (colcon build, or make build) "
            "and source install/setup.bash (or tools/env.sh)"
        )
    return found


class NodeProcess:
    """One executable in its own session (so SIGKILL reaches its children too)."""

    def __init__(self, name: str, args: list[str], domain_id: int, log_path: str | Path | None = None):
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1")
        env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")  # large images between processes
        self.name = name
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix=f"{name}_", suffix=".log")
            os.close(handle)
        self.log_path = Path(log_path)
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [find_executable(name), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (a clean ROS shutdown), SIGKILL to the whole session after ``timeout``."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
        self.wait(timeout)
        return self.proc.returncode

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()


class NodeGroup:
    """Several node processes started together, stopped together."""

    def __init__(self, names: list[str], args: list[str], domain_id: int, log_dir: str | Path):
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs = [NodeProcess(name, args, domain_id, log_dir / f"{name}.log") for name in names]

    def dead(self) -> list[str]:
        return [p.name for p in self.procs if not p.alive()]

    def logs(self, tail: int = 2000) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path}) ---\n{p.output()[-tail:]}" for p in self.procs)

    def stop(self, timeout: float = 10.0) -> None:
        for p in self.procs:  # signal all first: they shut down in parallel
            if p.alive():
                p.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.wait(deadline - time.monotonic())


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
