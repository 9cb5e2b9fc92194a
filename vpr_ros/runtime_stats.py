"""Numbers the nodes report in diagnostics: latency percentiles and process memory."""

from __future__ import annotations

import os
import threading
from collections import deque

import numpy as np


class LatencyWindow:
    """The last ``size`` durations (milliseconds) and their percentiles; thread-safe."""

    def __init__(self, size: int = 500):
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(float(ms))
            self.count += 1

    def summary(self, prefix: str) -> dict[str, float]:
        """``{prefix}_p50``, ``_p90``, ``_p99``, ``_max`` over the window (empty before any value)."""
        with self._lock:
            values = np.fromiter(self._values, dtype=np.float64, count=len(self._values))
        if not len(values):
            return {}
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return {
            f"{prefix}_p50": float(p50),
            f"{prefix}_p90": float(p90),
            f"{prefix}_p99": float(p99),
            f"{prefix}_max": float(values.max()),
        }


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def rss_of(pid: int) -> int | None:
    """Resident memory of another process (Linux), None when it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
