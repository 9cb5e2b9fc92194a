"""Each node's health on /diagnostics (diagnostic_msgs/DiagnosticArray), about once a second.

One DiagnosticStatus per node, named ``<node name>: <task>``, with flat key/value pairs that
the node's ``collect`` callback returns (counters, latency percentiles, map size, memory).
``rqt_runtime_monitor`` and ``diagnostic_aggregator`` read it as they read any driver's.
diagnostic_updater is not used: it is not available everywhere vpr_ros runs, and this is all
of it that the nodes need.
"""

from __future__ import annotations

from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from ..runtime_stats import rss_bytes

OK, WARN, ERROR = 0, 1, 2
_LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


def _format(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1e6 else f"{value:.6g}"
    return str(value)


class NodeDiagnostics:
    """``collect() -> (level, message, {key: value})``; memory (rss_mb) is added here."""

    def __init__(self, node, task: str, collect: Callable[[], tuple[int, str, dict]], period: float = 1.0):
        self._node = node
        self._collect = collect
        self.name = f"{node.get_name()}: {task}"
        self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = node.create_timer(period, self.publish) if period > 0 else None

    def status(self) -> DiagnosticStatus:
        try:
            level, message, values = self._collect()
        except Exception as exc:  # diagnostics must never take a node down
            level, message, values = ERROR, f"diagnostics failed: {type(exc).__name__}: {exc}", {}
        values = dict(values, rss_mb=rss_bytes() / 2**20)
        return DiagnosticStatus(
            level=_LEVELS[level],
            name=self.name,
            message=message,
            hardware_id=self._node.get_fully_qualified_name(),
            values=[KeyValue(key=str(k), value=_format(v)) for k, v in values.items()],
        )

    def publish(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        msg.status = [self.status()]
        self.pub.publish(msg)
