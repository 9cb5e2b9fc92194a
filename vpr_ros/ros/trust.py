"""Inter-node messages taken only from the node that should send them.

Any process on the ROS domain can publish on ``vpr/map_info``, ``vpr/candidates`` or
``vpr/verified``: one forged MapInfo would clear every node's state and a forged ACCEPTED
verdict would go out as a loop closure. Each subscriber therefore checks the sender: the
publisher GID in the message info must belong to the expected node (by name, in this node's
namespace) according to the ROS graph. This stops stray and naive publishers; it is not
authentication (a hostile process can name itself ``descriptor_node``). For that, run the
graph with SROS2 / DDS security (docs/operations.md).
"""

from __future__ import annotations

import time


def publisher_gid(message_info) -> bytes | None:
    """The sending publisher's GID from an rclpy MessageInfo (None if the middleware gave none)."""
    gid = (message_info or {}).get("publisher_gid") if isinstance(message_info, dict) else None
    return bytes(gid["data"]) if gid and gid.get("data") is not None else None


class SenderCheck:
    """Accepts a message on ``topic`` only from a publisher of node ``sender`` (same namespace).

    A node's name reaches the graph through its own discovery topic, which can lag the first
    data message by a moment (a latched MapInfo arrives at once). So a GID not seen before is
    looked up for up to ``wait_s``; a GID found to be someone else's is refused without a
    lookup for ``recheck_s`` (a flood of forged messages costs one wait per publisher).
    """

    def __init__(self, node, topic: str, sender: str, wait_s: float = 2.0, recheck_s: float = 5.0):
        self.node = node
        self.topic = _resolve(node, topic)
        self.sender = sender
        self.wait_s = wait_s
        self.recheck_s = recheck_s
        self._trusted: set[bytes] = set()
        self._refused: dict[bytes, float] = {}  # gid -> when it was last looked up

    def accepts(self, message_info) -> bool:
        gid = publisher_gid(message_info)
        if gid is None:
            return False
        if gid in self._trusted:
            return True
        now = time.monotonic()
        if now - self._refused.get(gid, -float("inf")) < self.recheck_s:
            return False
        deadline = now + (self.wait_s if gid not in self._refused else 0.0)
        while True:
            self._refresh()
            if gid in self._trusted:
                self._refused.pop(gid, None)
                return True
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if len(self._refused) >= MAX_REFUSED_PUBLISHERS:
            self._refused.pop(next(iter(self._refused)))
        self._refused[gid] = time.monotonic()
        return False

    def _refresh(self) -> None:
        namespace = self.node.get_namespace()
        self._trusted = {
            bytes(info.endpoint_gid)
            for info in self.node.get_publishers_info_by_topic(self.topic)
            if info.node_name == self.sender and info.node_namespace == namespace
        }


MAX_REFUSED_PUBLISHERS = 1000


def _resolve(node, topic: str) -> str:
    """The fully qualified topic name (graph queries want one): ``/<namespace>/<topic>``."""
    if topic.startswith("/"):
        return topic
    namespace = node.get_namespace().rstrip("/")
    return f"{namespace}/{topic}"
