"""Re-ranker node: verifies each keyframe's retrieval candidates, publishes /vpr/verified."""

from __future__ import annotations

from collections import Counter

from rclpy.node import Node

from ..msg import LoopCandidates, LoopClosureArray
from ..pipeline import VerificationStage
from .conversions import candidates_from_msg, keyframe_from_msg, verification_to_msg
from .params import declare_pipeline_parameters, read_pipeline_config
from .worker import BoundedWorker

PARAMETERS = [
    "reranker",
    "geometric_feature",
    "geometric_max_features",
    "geometric_ratio",
    "geometric_min_matches",
    "geometric_min_inliers",
    "geometric_ransac_threshold_px",
    "feature_ram_budget_mb",
    "feature_fp16",
    "feature_spill_dir",
    "pairvpr_weights",
    "pairvpr_batch_size",
    "pairvpr_min_score",
    "keypatch_threshold",
    "keypatch_ransac_factor",
    "keypatch_min_inliers",
    "device",
    "model",  # with weights: the checkpoint the pair classifier shares with model:=pairvpr
    "weights",
    "queue_size",
]


class RerankerNode(Node):
    def __init__(self, **kwargs):
        super().__init__("reranker_node", **kwargs)
        declare_pipeline_parameters(self, PARAMETERS)
        self.config = read_pipeline_config(self, PARAMETERS)
        self.stage = VerificationStage(self.config)
        self.counts: Counter = Counter()
        self.pub = self.create_publisher(LoopClosureArray, "vpr/verified", 10)
        # Every keyframe passes through here and a dropped one never becomes a loop target,
        # so this queue absorbs bursts (~0.6 MB per queued keyframe with its image).
        self.worker = BoundedWorker(
            self._process, max(self.config.queue_size, 50), self.get_logger(), "reranker"
        )
        self.create_subscription(LoopCandidates, "vpr/candidates", self.worker.submit, 50)
        self.get_logger().info(f"re-ranker '{self.config.reranker}' ready")

    def _process(self, msg: LoopCandidates) -> None:
        query = keyframe_from_msg(msg.query)
        results = self.stage.process(query, candidates_from_msg(msg))
        self.counts["queries"] += 1
        out = LoopClosureArray()
        out.header = msg.header
        out.query_id = query.id
        out.closures = [verification_to_msg(query, v, msg.query.model, self.config.reranker) for v in results]
        self.pub.publish(out)

    def destroy_node(self):
        self.worker.stop()
        return super().destroy_node()


def main(args=None) -> None:
    from .spin import run_nodes

    run_nodes([RerankerNode], args)


if __name__ == "__main__":
    main()
