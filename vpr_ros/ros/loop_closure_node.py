"""Loop-closure node: thresholds + temporal consistency -> /vpr/loop_closures.

Rejected queries (with their reason) go to /vpr/rejected so users can see why no loop was
reported at a place.
"""

from __future__ import annotations

from collections import Counter

from rclpy.node import Node

from ..msg import LoopClosure, LoopClosureArray
from ..pipeline import build_decider
from .conversions import decision_to_msg, stamp_to_sec, verification_from_msg
from .params import declare_pipeline_parameters, read_pipeline_config

PARAMETERS = [
    "min_similarity",
    "min_reranker_score",
    "consistency",
    "consistency_id_tolerance",
    "consistency_max_query_gap",
    "accept_score",
]


class LoopClosureNode(Node):
    def __init__(self, **kwargs):
        super().__init__("loop_closure_node", **kwargs)
        declare_pipeline_parameters(self, PARAMETERS)
        self.declare_parameter("publish_rejected", True)
        self.config = read_pipeline_config(self, PARAMETERS)
        self.decider = build_decider(self.config)
        self.counts: Counter = Counter()
        # Verified candidates of recent unconfirmed queries, by query id then match id.
        self._pending: dict[int, dict[int, LoopClosure]] = {}
        self.loop_pub = self.create_publisher(LoopClosure, "vpr/loop_closures", 50)
        self.rejected_pub = self.create_publisher(LoopClosure, "vpr/rejected", 10)
        self.create_subscription(LoopClosureArray, "vpr/verified", self._on_verified, 50)

    def _on_verified(self, msg: LoopClosureArray) -> None:
        verifications = [verification_from_msg(c) for c in msg.closures]
        decision = self.decider.decide(int(msg.query_id), stamp_to_sec(msg.header.stamp), verifications)
        self.counts[decision.status.name] += 1
        template = None
        if decision.best is not None:
            template = next(c for c in msg.closures if c.match_id == decision.best.candidate.id)
        self._publish(decision_to_msg(decision, template, msg.header.frame_id), decision)
        # Earlier keyframes this one confirmed: their stored messages, now accepted.
        for late in decision.confirmed:
            stored = self._pending.pop(late.query_id, {}).get(late.best.candidate.id)
            self._publish(decision_to_msg(late, stored, msg.header.frame_id), late)
        if template is not None and not decision.accepted:
            self._pending[decision.query_id] = {c.match_id: c for c in msg.closures}
        while len(self._pending) > 64:  # only recent queries can still be confirmed
            self._pending.pop(next(iter(self._pending)))

    def _publish(self, out: LoopClosure, decision) -> None:
        if decision.accepted:
            self.loop_pub.publish(out)
            self.get_logger().info(
                f"loop closure {out.query_id} -> {out.match_id} (similarity {out.similarity:.3f}, "
                f"score {out.reranker_score:.1f}): {decision.reason}"
            )
        else:
            self.get_logger().debug(
                f"keyframe {decision.query_id}: {decision.status.name}: {decision.reason}"
            )
            if self.get_parameter("publish_rejected").value:
                self.rejected_pub.publish(out)


def main(args=None) -> None:
    from .spin import run_nodes

    run_nodes([LoopClosureNode], args)


if __name__ == "__main__":
    main()
