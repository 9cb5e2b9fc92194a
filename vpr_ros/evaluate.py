"""evaluate: measure loop closure on a rosbag2 or an image folder against ground truth.

    evaluate --images DIR --gt-matrix gt.bmp --model mobilenetv2 --output out/
    evaluate --bag BAG --image-topic /cam/image_raw --pose-topic /odom --output out/
    evaluate --bag BAG --image-topic /cam/image_raw --gt-poses poses.tum --replay --rate 5

Input: --bag (rosbag2, mcap or sqlite3; Image or CompressedImage on --image-topic, optional
--camera-info-topic) or --images (a folder, natural filename order, --frame-period apart).

Ground truth (one of): --pose-topic (nav_msgs/Odometry, geometry_msgs/PoseStamped or
PoseWithCovarianceStamped in the bag), --gt-poses (TUM or KITTI file), or --gt-matrix
(8-bit image, 255 = same place, or boolean .npy; entry (i, j) is about frames i and j).
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
keyframe), pr_curve.png, similarity_matrix.png, trajectory.png (when poses exist); a table
on stdout. How each number is computed: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import resource
import sys
import time
from pathlib import Path

import yaml

from . import __version__
from .config import PipelineConfig, default_params_file, load_config, read_params_file
from .evaluation.ground_truth import GroundTruth, GroundTruthError, read_pose_file, read_same_place_matrix
from .evaluation.run import RunRecord, run_offline
from .evaluation.scoring import Scores, loop_window, score_run
from .evaluation.sources import BagSource, ImageFolderSource, SourceError, read_camera_info_yaml
from .weights import WeightsError

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
    src = p.add_argument_group("input (one of --bag, --images)")
    src.add_argument("--bag", help="rosbag2 directory, .mcap or .db3 file")
    src.add_argument("--image-topic", help="image topic in the bag (sensor_msgs/Image or CompressedImage)")
    src.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo topic in the bag (optional)")
    src.add_argument("--images", help="image folder, natural filename order")
    src.add_argument(
        "--frame-period", type=float, default=1.0, help="--images: seconds between images (default 1.0)"
    )
    src.add_argument("--camera-info", help="--images: ROS camera calibration YAML (optional)")
    src.add_argument("--max-frames", type=int, help="use only the first N frames")

    gt = p.add_argument_group("ground truth (one of --pose-topic, --gt-poses, --gt-matrix)")
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
    det.add_argument("--reranker", help="geometric or none (default: from the params file)")
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
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if bool(args.bag) == bool(args.images):
        p.error("give exactly one input: --bag or --images")
    if args.bag and not args.image_topic:
        p.error("--bag needs --image-topic")
    gt_sources = [a for a in (args.pose_topic, args.gt_poses, args.gt_matrix) if a]
    if len(gt_sources) != 1:
        p.error("give exactly one ground truth: --pose-topic, --gt-poses or --gt-matrix")
    if args.images and (args.pose_topic or args.camera_info_topic):
        p.error("--pose-topic and --camera-info-topic read from a bag: use --gt-poses / --camera-info")
    if args.bag and args.camera_info:
        p.error("--camera-info is for --images; a bag has --camera-info-topic")
    if args.rate <= 0:
        p.error("--rate must be > 0")
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


def _open_source(args):
    track = read_pose_file(args.gt_poses, args.gt_format) if args.gt_poses else None
    if args.bag:
        return BagSource(
            args.bag,
            args.image_topic,
            camera_info_topic=args.camera_info_topic,
            pose_topic=args.pose_topic,
            poses=track,
            max_pose_dt=args.gt_max_dt,
            max_frames=args.max_frames,
        )
    k = size = None
    if args.camera_info:
        k, size = read_camera_info_yaml(args.camera_info)
    return ImageFolderSource(
        args.images,
        frame_period=args.frame_period,
        camera_matrix=k,
        camera_size=size,
        poses=track,
        max_pose_dt=args.gt_max_dt,
        max_frames=args.max_frames,
    )


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


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan": strict JSON has no such numbers
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    return value


def _fmt(value, digits=3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(report: dict, out=sys.stdout) -> None:
    r = report
    rows = [
        ("frames / keyframes", f"{r['num_frames']} / {r['num_keyframes']}"),
        ("queries with a loop", str(r["num_queries_with_loop"])),
        ("loop closures (true / false)", f"{r['true_positives']} / {r['false_positives']}"),
        ("precision / recall", f"{_fmt(r['precision'])} / {_fmt(r['recall'])}"),
        ("recall at 100% precision", _fmt(r["recall_at_100_precision"])),
        ("average precision", _fmt(r["average_precision"])),
        ("R@1 / R@5 / R@10", " / ".join(_fmt(r[f"recall_at_{k}"]) for k in (1, 5, 10))),
        (
            "keyframe latency mean / p95",
            f"{_fmt(r['mean_keyframe_latency_ms'], 1)} / {_fmt(r['p95_keyframe_latency_ms'], 1)} ms",
        ),
    ]
    if "replay" in r:
        rp = r["replay"]
        rows.append(("frames lost in replay", f"{rp['keyframes_missing']} of {rp['reference_keyframes']}"))
    width = max(len(name) for name, _ in rows)
    print(f"{'metric':<{width}}  value", file=out)
    print(f"{'-' * width}  {'-' * 16}", file=out)
    for name, value in rows:
        print(f"{name:<{width}}  {value}", file=out)


def _write_queries_csv(path: Path, rows: list[dict]) -> None:
    fields = [
        "keyframe",
        "frame",
        "stamp",
        "has_loop",
        "best_match_frame",
        "best_score",
        "best_similarity",
        "best_correct",
        "decision",
        "latency_ms",
    ]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})


def _plots(out: Path, scores: Scores, run: RunRecord, gt: GroundTruth, title: str) -> list[Path]:
    from .evaluation import plots

    r = scores.report
    files = [
        plots.plot_pr_curve(
            scores.curve,
            scores.operating_point,
            out / "pr_curve.png",
            title,
            r["average_precision"],
            r["recall_at_100_precision"],
        )
    ]
    if scores.similarity is not None and len(scores.similarity):
        frames = scores.keyframe_frames
        index = {int(f): i for i, f in enumerate(frames)}
        kf_closures = [(index[q], index[m], ok) for q, m, ok in scores.closures if q in index and m in index]
        same = gt.same_place[frames][:, frames]
        files.append(
            plots.plot_similarity(scores.similarity, same, kf_closures, out / "similarity_matrix.png", title)
        )
    positions = {f: p[:3, 3] for f, p in run.frame_poses.items() if p is not None}
    if len(positions) >= 2:
        files.append(
            plots.plot_trajectory(positions, run.frame_stamps, scores.closures, out / "trajectory.png", title)
        )
    return files


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
    source = _open_source(args)
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
                from .evaluation.replay import ReplayError, run_replay
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
        },
        **scores.report,
        "wall_time_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
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
    report = _json_safe(report)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _write_queries_csv(out / "queries.csv", scores.queries)
    files = [out / "report.json", out / "queries.csv"]
    if not args.no_plots:
        title = f"{source.name}: {config.model} + {config.reranker} ({mode})"
        files += _plots(out, scores, run, gt, title)
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
    print("wrote " + ", ".join(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
