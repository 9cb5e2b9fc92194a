"""QoS profiles shared by the nodes."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Map announcements (vpr/map_info): late joiners, such as a restarted re-ranker, get the last one.
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def image_qos(reliability: str, depth: int) -> QoSProfile:
    """Camera subscriptions: the newest ``depth`` images, reliable or best effort."""
    if reliability not in ("reliable", "best_effort"):
        raise ValueError(f"image_reliability must be 'reliable' or 'best_effort', got '{reliability}'")
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy)
