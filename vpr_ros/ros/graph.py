"""The whole loop-closure graph in one process (for users without ros2 launch, and tests).

Same nodes, same topics, same parameters as the launch file; pass them as usual:
``vpr_graph --ros-args --params-file config/image.yaml -p image_topic:=/cam/image_raw``.
"""

from __future__ import annotations

from .descriptor_node import DescriptorNode
from .loop_closure_node import LoopClosureNode
from .reranker_node import RerankerNode
from .spin import run_nodes


def main(args=None) -> None:
    run_nodes([DescriptorNode, RerankerNode, LoopClosureNode], args)


if __name__ == "__main__":
    main()
