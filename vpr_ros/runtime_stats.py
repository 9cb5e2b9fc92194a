"""Numbers the nodes report in diagnostics: latency percentiles and process memory."""

from __future__ import annotations

import os
import sys
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


def rss_of(pid: int | str = "self") -> int | None:
    """Resident memory of a process now (Linux /proc), None when it is gone or unknown."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (getrusage; Linux reports KiB, macOS bytes)."""
    import resource

    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024


def rss_bytes() -> int:
    """Resident memory of this process now, else (no /proc) its peak."""
    current = rss_of()
    return current if current is not None else peak_rss_bytes()
