"""What ``evaluate`` writes: strict-JSON report values, the terminal table, queries.csv, plots."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

from .ground_truth import GroundTruth
from .run import RunRecord
from .scoring import Scores


def json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan": strict JSON has no such numbers
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


def fmt(value, digits=3) -> str:
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
        ("precision / recall", f"{fmt(r['precision'])} / {fmt(r['recall'])}"),
        ("recall at 100% precision", fmt(r["recall_at_100_precision"])),
        ("average precision", fmt(r["average_precision"])),
        ("R@1 / R@5 / R@10", " / ".join(fmt(r[f"recall_at_{k}"]) for k in (1, 5, 10))),
        (
            "keyframe latency mean / p95",
            f"{fmt(r['mean_keyframe_latency_ms'], 1)} / {fmt(r['p95_keyframe_latency_ms'], 1)} ms",
        ),
    ]
    rel = r.get("relative_pose")
    if rel and rel["closures"]:
        kinds = rel["pose_kinds"]
        rows.append(
            (
                "pose kinds metric / rot-only / none",
                f"{kinds['metric']} / {kinds['rotation_only']} / {kinds['none']}",
            )
        )
        errors = rel["errors"]
        for name, key, unit in (
            ("rotation error", "rotation_error_deg", "deg"),
            ("direction error", "translation_direction_error_deg", "deg"),
            ("translation error", "translation_error_m", "m"),
            ("translation error", "translation_error_pct", "%"),
        ):
            e = errors[key]
            if e["n"]:
                rows.append(
                    (
                        f"{name} med / p95 / max",
                        f"{fmt(e['median'])} / {fmt(e['p95'])} / {fmt(e['max'])} {unit}",
                    )
                )
    if "replay" in r:
        rp = r["replay"]
        rows.append(("frames lost in replay", f"{rp['keyframes_missing']} of {rp['reference_keyframes']}"))
    width = max(len(name) for name, _ in rows)
    print(f"{'metric':<{width}}  value", file=out)
    print(f"{'-' * width}  {'-' * 16}", file=out)
    for name, value in rows:
        print(f"{name:<{width}}  {value}", file=out)


def print_drift(report: dict, out=None) -> None:
    """The one-line before/after of the pose graph, when the report has one."""
    out = out or sys.stdout  # looked up now, so that a redirected stdout gets it
    d = report.get("drift")
    if not d:
        return
    if d["odometry_ape_rmse_m"] is None:
        print(f"APE RMSE: n/a ({d['nodes_with_ground_truth']} graph nodes with ground truth)", file=out)
        return
    change = d["reduction_pct"]
    print(
        f"APE RMSE: odometry {d['odometry_ape_rmse_m']:.3f} m -> with loop closures "
        f"{d['optimized_ape_rmse_m']:.3f} m ({-change if change is not None else 0.0:+.1f} %; "
        f"{d['loops_added']} loops added, {d['loops_skipped']} skipped, {d['align']} aligned)",
        file=out,
    )


def write_queries_csv(path: Path, rows: list[dict]) -> None:
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


def write_plots(
    out: Path, scores: Scores, run: RunRecord, gt: GroundTruth, title: str, trajectory: bool = True
) -> list[Path]:
    """The PR curve, the similarity matrix and (``trajectory``) the ground-truth path with closures."""
    from . import plots

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
    if trajectory and len(positions) >= 2:
        files.append(
            plots.plot_trajectory(positions, run.frame_stamps, scores.closures, out / "trajectory.png", title)
        )
    return files
