"""evaluate: measure loop closure on a rosbag2 or an image folder against ground truth.

    evaluate --images DIR --gt-matrix gt.bmp --model mobilenetv2 --output out/
    evaluate --bag BAG --image-topic /cam/image_raw --pose-topic /odom --output out/
    evaluate --bag BAG --image-topic /cam/image_raw --gt-poses poses.tum --replay --rate 5
    evaluate --world DIR --model mobilenetv2 --output out/   # python -m vpr_ros.apps.world --export DIR

Input: --bag (rosbag2, mcap or sqlite3; Image or CompressedImage on --image-topic, optional
--camera-info-topic), --images (a folder, natural filename order, --frame-period apart or at
--stamps-ns; optional --depth folder) or --world (an exported world folder: images, depth,
stamps, camera info, ground-truth poses and same-place matrix, odometry, extrinsics; any of
them can be overridden by its own flag).

Odometry (offline): --odometry (TUM file of the body, odom_T_base) or --odom-drift (synthesised
from the ground-truth poses), with --extrinsics (base_T_camera). The pipeline then sees the
odometry camera pose, the closures carry body constraints, and a pose graph over odometry and
closures measures the trajectory error before and after (report.json "drift").

Ground truth: --pose-topic (nav_msgs/Odometry, geometry_msgs/PoseStamped or
PoseWithCovarianceStamped in the bag) or --gt-poses (TUM or KITTI file), and/or --gt-matrix
(8-bit image, 255 = same place, or boolean .npy; entry (i, j) is about frames i and j). With
both, the matrix decides same place and the poses are the truth for relative poses and drift.
With poses, two frames show the same place when their positions are at most --gt-radius
metres apart (and, with --gt-max-angle, their orientations within that many degrees).
A pair counts as a loop only when it is at least --min-gap-s seconds and --min-gap-frames
frames apart, and outside the detector's exclusion window (exclude_recent_keyframes,
exclude_recent_seconds).

Modes: offline (default) runs the pipeline in this process, deterministic; --replay plays
the frames through the real ROS 2 graph (node processes on a private ROS_DOMAIN_ID) at
--rate frames per second without waiting, and scores what arrives on /vpr/loop_closures,
so drops and latency count.

Output (--output DIR): report.json (metrics and every parameter), queries.csv (one row per
keyframe), loops.csv (one row per closure: relative-pose errors against the ground-truth
poses), pr_curve.png, similarity_matrix.png, trajectory.png (when poses exist: with odometry,
before/after the pose graph); a table on stdout. How each number is computed: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from .. import __version__
from ..config import PipelineConfig, default_params_file, load_config, read_params_file
from ..evaluation.drift import drift_report_for_run
from ..evaluation.ground_truth import GroundTruth, GroundTruthError, read_same_place_matrix
from ..evaluation.inputs import fill_world, open_source
from ..evaluation.loops import loop_rows, relative_pose_summary, write_loops_csv
from ..evaluation.report import json_safe, print_drift, print_table, write_plots, write_queries_csv
from ..evaluation.run import RunRecord, run_offline
from ..evaluation.scoring import loop_window, score_run
from ..evaluation.sources import SourceError
from ..lens import RECTIFIED
from ..rerank import reranker_names
from ..runtime_stats import peak_rss_bytes
from ..weights import WeightsError

DEFAULT_GT_RADIUS_M = 5.0
DEFAULT_GT_MAX_DT_S = 0.1
DEFAULT_MIN_GAP_S = 0.0  # the detector's exclude_recent_seconds applies anyway
DEFAULT_MIN_GAP_FRAMES = 0


class EvaluationError(RuntimeError):
    pass


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_argument_group("input (one of --bag, --images, --world)")
    src.add_argument("--bag", help="rosbag2 directory, .mcap or .db3 file")
    src.add_argument("--image-topic", help="image topic in the bag (sensor_msgs/Image or CompressedImage)")
    src.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo topic in the bag (optional)")
    src.add_argument("--images", help="image folder, natural filename order")
    src.add_argument(
        "--frame-period", type=float, default=1.0, help="--images: seconds between images (default 1.0)"
    )
    src.add_argument("--camera-info", help="--images: ROS camera calibration YAML (optional)")
    src.add_argument("--max-frames", type=int, help="use only the first N frames")
    src.add_argument(
        "--world", metavar="DIR", help="an exported world (python -m vpr_ros.apps.world --export)"
    )
    src.add_argument("--depth", metavar="DIR", help="--images: depth images of the same names (uint16 mm)")
    src.add_argument("--stamps-ns", metavar="FILE", help="--images: exact stamps, one integer ns per line")
    src.add_argument("--odometry", metavar="FILE", help="body odometry odom_T_base (TUM file), offline")
    src.add_argument(
        "--extrinsics",
        nargs="+",
        metavar="V",
        help="base_T_camera: a YAML file (x y z qx qy qz qw keys) or the 7 numbers x y z qx qy qz qw",
    )
    src.add_argument(
        "--odom-drift",
        nargs=2,
        type=float,
        metavar=("YAW_DEG_PER_M", "SCALE"),
        help="synthesise drifting body odometry from the ground-truth poses (yaw bias, scale error)",
    )

    gt = p.add_argument_group("ground truth (--pose-topic or --gt-poses, and/or --gt-matrix)")
    gt.add_argument(
        "--pose-topic",
        "--gt-topic",
        dest="pose_topic",
        help="pose topic in the bag: Odometry, PoseStamped, PoseWithCovarianceStamped",
    )
    gt.add_argument("--gt-poses", help="TUM (timestamped) or KITTI (one line per frame) pose file")
    gt.add_argument("--gt-format", choices=("auto", "tum", "kitti"), default="auto", help="for --gt-poses")
    gt.add_argument("--gt-matrix", help="same-place matrix: 8-bit image (255 = same place) or .npy")
    gt.add_argument(
        "--gt-radius",
        type=float,
        default=DEFAULT_GT_RADIUS_M,
        help=f"poses: same place within this many metres (default {DEFAULT_GT_RADIUS_M:g})",
    )
    gt.add_argument(
        "--gt-max-angle",
        type=float,
        default=None,
        help="poses: and orientations within N degrees (default off)",
    )
    gt.add_argument(
        "--gt-max-dt",
        type=float,
        default=DEFAULT_GT_MAX_DT_S,
        help=f"poses: nearest pose within this many seconds of a frame (default {DEFAULT_GT_MAX_DT_S:g})",
    )
    gt.add_argument(
        "--min-gap-s",
        type=float,
        default=DEFAULT_MIN_GAP_S,
        help="a loop pair is at least this many seconds apart (default 0; the detector's "
        "exclude_recent_seconds applies in any case)",
    )
    gt.add_argument(
        "--min-gap-frames",
        type=int,
        default=DEFAULT_MIN_GAP_FRAMES,
        help="a loop pair is at least this many input frames apart (default 0; the detector's "
        "exclude_recent_keyframes applies in any case)",
    )

    det = p.add_argument_group("detector")
    det.add_argument("--model", help="registry model (default: from the params file, else 'image')")
    det.add_argument("--weights", help="checkpoint for --model")
    det.add_argument("--reranker", choices=reranker_names(), help="re-ranker (default: from the params file)")
    det.add_argument(
        "--params-file", help="the nodes' parameters YAML (default: config/<model>.yaml when it exists)"
    )
    det.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one parameter (repeatable), e.g. -p consistency=1",
    )

    run = p.add_argument_group("mode")
    run.add_argument(
        "--replay", action="store_true", help="play through the ROS 2 graph instead of in-process"
    )
    run.add_argument("--rate", type=float, default=5.0, help="--replay: frames per second (default 5)")
    run.add_argument(
        "--graph",
        choices=("processes", "single"),
        default="processes",
        help="--replay: one process per node like the launch file (default), or vpr_graph",
    )
    run.add_argument("--domain-id", type=int, help="--replay: ROS_DOMAIN_ID (default: a private one)")
    run.add_argument(
        "--threads",
        type=int,
        default=0,
        help="offline: CPU threads for torch and OpenCV (default 0: the libraries' choice); "
        "1 is much faster on a machine that is busy with other work",
    )
    run.add_argument(
        "--replay-timeout", type=float, default=120.0, help="--replay: seconds to wait for the graph"
    )

    out = p.add_argument_group("output")
    out.add_argument("--output", required=True, help="folder for report.json, queries.csv and the plots")
    out.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    out.add_argument(
        "--compare",
        metavar="NAMES",
        help="offline: also run these re-rankers (comma list, e.g. geometric,none) on the same "
        "descriptors and write compare.csv (each verifier's decision per keyframe) and report.json compare",
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if sum(bool(a) for a in (args.bag, args.images, args.world)) != 1:
        p.error("give exactly one input: --bag, --images or --world")
    if args.world:
        try:
            fill_world(args)
        except SourceError as err:
            p.error(str(err))
    if args.bag and not args.image_topic:
        p.error("--bag needs --image-topic")
    if not (args.pose_topic or args.gt_poses or args.gt_matrix):
        p.error("give a ground truth: --pose-topic, --gt-poses or --gt-matrix")
    if args.pose_topic and args.gt_poses:
        p.error("give one pose ground truth: --pose-topic or --gt-poses")
    if args.bag and (args.depth or args.stamps_ns):
        p.error("--depth and --stamps-ns are for --images (a bag has its header stamps)")
    if args.replay and (args.odometry or args.odom_drift):
        p.error("--odometry and --odom-drift are for the offline mode (a replay publishes images only)")
    if args.odometry and args.odom_drift:
        p.error("give --odometry or --odom-drift, not both")
    if (args.odometry or args.odom_drift) and not args.extrinsics:
        p.error("odometry needs --extrinsics (base_T_camera; 0 0 0 0 0 0 1 for odometry of the camera)")
    if args.odom_drift and not (args.images and args.gt_poses):
        p.error("--odom-drift needs --images (or --world) with --gt-poses")
    if args.extrinsics and len(args.extrinsics) not in (1, 7):
        p.error("--extrinsics takes a YAML file or 7 numbers x y z qx qy qz qw")
    if args.images and (args.pose_topic or args.camera_info_topic):
        p.error("--pose-topic and --camera-info-topic read from a bag: use --gt-poses / --camera-info")
    if args.bag and args.camera_info:
        p.error("--camera-info is for --images; a bag has --camera-info-topic")
    if args.rate <= 0:
        p.error("--rate must be > 0")
    if args.compare:
        if args.replay:
            p.error("--compare runs in-process (each verifier on the same descriptors), not with --replay")
        args.compare = [n.strip() for n in args.compare.split(",") if n.strip()]
        if not args.compare or set(args.compare) - set(reranker_names()):
            p.error(f"--compare takes re-rankers from: {', '.join(reranker_names())}")
    return args


def _params(args) -> tuple[dict, str | None]:
    """Parameters as the nodes would see them: params file, then the command-line overrides."""
    params_file = args.params_file
    if params_file is None:
        try:
            params_file = str(default_params_file(args.model or "image"))
        except FileNotFoundError:
            params_file = None
    params = read_params_file(params_file)
    for name, value in (("model", args.model), ("weights", args.weights), ("reranker", args.reranker)):
        if value:
            params[name] = value
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise EvaluationError(f"-p expects NAME=VALUE, got '{item}'")
        params[name.strip()] = yaml.safe_load(value)
    return params, params_file


def _ground_truth(args, source, run: RunRecord, matrix) -> GroundTruth:
    n = len(source)
    if matrix is not None:
        return GroundTruth.from_matrix(matrix, n, f"matrix {args.gt_matrix}")
    poses = [run.frame_poses.get(i) for i in range(n)]
    label = source.poses.source if source.poses is not None else "poses"
    return GroundTruth.from_poses(poses, args.gt_radius, args.gt_max_angle, label)


def _progress(total: int, enabled: bool, desc: str):
    """A tqdm bar on stderr (a no-op without a terminal or with --no-progress)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="frame", disable=None if enabled else True, file=sys.stderr)
    return bar


def _set_threads(n: int) -> None:
    if n <= 0:
        return
    import cv2
    import torch

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def evaluate(args) -> dict:
    _set_threads(args.threads)
    params, params_file = _params(args)
    config: PipelineConfig = load_config(**params)
    if config.localization_only:
        raise EvaluationError(
            "localization_only queries a map from an earlier session; evaluate measures loop closure "
            "within one sequence (set -p localization_only=false)"
        )
    source = open_source(args)
    matrix = None
    if args.gt_matrix:  # read and check it before the long part
        matrix = read_same_place_matrix(args.gt_matrix)
        GroundTruth.from_matrix(matrix, len(source), f"matrix {args.gt_matrix}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    mode = "replay" if args.replay else "offline"
    bar = _progress(len(source), not args.no_progress, f"{mode} {source.name}")
    t0 = time.monotonic()
    try:
        if args.replay:
            try:
                from ..ros.replay import ReplayError, run_replay
            except ImportError as err:
                raise EvaluationError(
                    f"--replay needs ROS 2 and the built package ({err}): colcon build, source "
                    "install/setup.bash and run the installed `evaluate` (the source tree has no vpr_ros.msg)"
                ) from err

            try:
                run = run_replay(
                    source,
                    config,
                    params,
                    rate_hz=args.rate,
                    graph=args.graph,
                    domain_id=args.domain_id,
                    timeout=args.replay_timeout,
                    log_dir=out / "replay_logs",
                    progress=bar.update,
                )
            except ReplayError as err:
                raise EvaluationError(str(err)) from err
        else:
            run = run_offline(source, config, progress=lambda: bar.update(1))
    finally:
        bar.close()
    wall = time.monotonic() - t0
    gt = _ground_truth(args, source, run, matrix)
    window = loop_window(config, args.min_gap_s, args.min_gap_frames)
    scores = score_run(run, gt, config, window)

    report = {
        "vpr_ros_version": __version__,
        "mode": mode,
        "input": {
            "bag": args.bag,
            "image_topic": args.image_topic,
            "camera_info_topic": args.camera_info_topic,
            "images": args.images,
            "frame_period_s": args.frame_period if args.images else None,
            "camera_info": args.camera_info,
            "max_frames": args.max_frames,
            "bad_images": source.bad_images,
            "world": args.world,
            "depth": args.depth,
            "stamps_ns": args.stamps_ns,
            "odometry": args.odometry,
            "odom_drift": args.odom_drift,
            "extrinsics": args.extrinsics,
            "lens": getattr(source, "lens", RECTIFIED).model or "rectified",
        },
        **scores.report,
        "wall_time_s": wall,
        "peak_rss_mb": peak_rss_bytes() / 2**20,
        "ground_truth": {
            "source": gt.source,
            "radius_m": None if args.gt_matrix else args.gt_radius,
            "max_angle_deg": None if args.gt_matrix else args.gt_max_angle,
            "max_dt_s": None if args.gt_matrix else args.gt_max_dt,
            "min_gap_s": window.min_gap_s,
            "min_gap_frames": window.min_gap_frames,
            "min_gap_keyframes": window.min_gap_keyframes,
        },
        "arguments": {k: v for k, v in vars(args).items()},
        "params_file": params_file,
        "parameters": config.to_dict(),
        "pr_curve": scores.curve.as_dict(),
    }
    if run.info:
        report["replay"] = dict(
            run.info,
            reference_keyframes=scores.report["num_reference_keyframes"],
            keyframes_missing=max(
                0, scores.report["num_reference_keyframes"] - scores.report["num_keyframes"]
            ),
        )
    loops = loop_rows(run, gt)
    report["relative_pose"] = relative_pose_summary(loops)
    title = f"{source.name}: {config.model} + {config.reranker} ({mode})"
    drift = drift_report_for_run(
        run, plot_path=None if args.no_plots else out / "trajectory.png", title=title
    )
    if drift is not None:
        report["drift"] = drift
    report = json_safe(report)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_queries_csv(out / "queries.csv", scores.queries)
    files = [out / "report.json", out / "queries.csv", write_loops_csv(out / "loops.csv", loops)]
    if drift is not None and "plot" in drift:
        files.append(Path(drift["plot"]))
    if not args.no_plots:
        files += write_plots(out, scores, run, gt, title, trajectory=drift is None)
    if args.compare:
        from ..evaluation.compare import compare_verifiers, decision_rows, write_compare_csv

        bar = _progress(len(source) * len(args.compare), not args.no_progress, "compare")
        try:
            runs, summary = compare_verifiers(source, config, args.compare, gt, window, lambda: bar.update(1))
        finally:
            bar.close()
        report["compare"] = json_safe(summary)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        files.append(write_compare_csv(out / "compare.csv", decision_rows(runs)))
    report["_files"] = [str(f) for f in files]
    return report


def main(argv=None) -> int:
    args = _parse(argv)
    try:
        report = evaluate(args)
    except (
        SourceError,
        GroundTruthError,
        EvaluationError,
        WeightsError,
        ValueError,
        FileNotFoundError,
    ) as err:
        print(f"evaluate: error: {err}", file=sys.stderr)
        return 2
    except KeyError as err:  # unknown model or re-ranker name
        print(f"evaluate: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    files = report.pop("_files")
    p = report["parameters"]
    print(
        f"evaluate: {report['mode']}, model {p['model']}, re-ranker {p['reranker']}, "
        f"ground truth from {report['ground_truth']['source']}; {report['wall_time_s']:.1f} s"
    )
    print_table(report)
    print_drift(report)
    from ..evaluation.compare import print_compare

    print_compare(report)
    print("wrote " + ", ".join(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
