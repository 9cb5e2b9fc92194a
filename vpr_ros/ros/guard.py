"""Timer and subscription callbacks that cannot take their node down.

rclpy lets an exception escape a callback into ``executor.spin()``, which ends the process:
one malformed message or map file would stop loop closing for good. ``guarded`` wraps a
callback so an exception is counted (``callback_errors.<name>`` in the node's counter, which
its diagnostics report) and logged at most once per ``log_period`` seconds, and the callback
returns None. Not for service callbacks: those must return a response.
"""

from __future__ import annotations

import functools
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable

ERROR_PREFIX = "callback_errors."
DEFAULT_LOG_PERIOD_S = 10.0  # a failing 30 Hz callback must not flood the log


def guarded(
    node,
    name: str,
    fn: Callable,
    counts: Counter | None = None,
    log_period: float = DEFAULT_LOG_PERIOD_S,
) -> Callable:
    """``fn`` wrapped; errors go to ``counts`` (default ``node.counts``) and the node's log."""
    counts = node.counts if counts is None else counts
    key = ERROR_PREFIX + name
    lock = threading.Lock()  # descriptor/reranker callbacks run on several executor threads
    last_log = [-float("inf")]
    suppressed = [0]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            with lock:
                counts[key] += 1
                now = time.monotonic()
                if now - last_log[0] < log_period:
                    suppressed[0] += 1
                    return None
                last_log[0], skipped, suppressed[0] = now, suppressed[0], 0
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            more = f" ({skipped} more since the last report)" if skipped else ""
            try:
                node.get_logger().error(
                    f"{name} callback failed: {type(exc).__name__}: {exc} "
                    f"at {frame.filename}:{frame.lineno}{more}; {counts[key]} in all"
                )
            except Exception:  # a logger after shutdown: the count is what matters
                pass
            return None

    return wrapper


def callback_errors(counts: Counter) -> dict[str, int]:
    """The ``callback_errors.*`` counts, for a node's diagnostics values."""
    return {k: v for k, v in sorted(counts.items()) if k.startswith(ERROR_PREFIX)}


__all__ = ["DEFAULT_LOG_PERIOD_S", "ERROR_PREFIX", "callback_errors", "guarded"]
