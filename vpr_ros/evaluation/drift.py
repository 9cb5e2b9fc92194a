"""Does a back end's trajectory get better with the loop closures? A pose graph, before and after.

Every frame's body odometry (odom_T_base, at its exact stamp) and every accepted closure's
body constraint (``base_pose``, match_base_T_query_base, at the two keyframes' exact stamps)
go into ``backends.pose_graph.PoseGraph`` in time order, as a back end would receive them.
The absolute position error (evo APE, translation part, RMSE) of the graph's raw odometry
and of its optimised poses is then measured against the ground-truth body poses at the
graph's node stamps, both after a rigid (SE3 Umeyama) alignment so that a fixed offset
between the odometry frame and the ground-truth world does not count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backends.pose_graph import PoseGraph, PoseGraphParams
from ..geometry import invert_pose
from .run import RunRecord

ALIGN = "se3"


def drift_report(
    stamps_ns,
    odometry,
    gt_body,
    closures,
    params: PoseGraphParams | None = None,
    plot_path: str | Path | None = None,
    title: str = "",
) -> dict:
    """APE of odometry vs optimised poses against ground truth (report.json ``drift``).

    ``stamps_ns``, ``odometry`` (odom_T_base) and ``gt_body`` (world_T_base) are per frame, in
    any order, None where a frame has no odometry or no ground truth. ``closures`` are objects
    with ``query_stamp_ns``, ``match_stamp_ns`` and ``base_pose`` (``run.ClosureRecord``); one
    without a body pose is skipped ("no_base_pose"). ``plot_path``: the before/after top view.
    """
    frames = sorted(
        (
            (int(s), np.asarray(o, np.float64), g)
            for s, o, g in zip(stamps_ns, odometry, gt_body, strict=True)
            if o is not None
        ),
        key=lambda f: f[0],
    )
    pending = sorted(
        (c for c in closures if c.query_stamp_ns is not None and c.match_stamp_ns is not None),
        key=lambda c: c.query_stamp_ns,
    )
    graph = PoseGraph(params)
    skipped = {"no_base_pose": 0}
    kinds = {"metric": 0, "rotation_only": 0}
    loops = []  # (query node, match node) of the factors added

    def add(closure):
        if closure.base_pose is None:
            skipped["no_base_pose"] += 1
            return
        pose = closure.base_pose
        result = graph.add_loop(
            closure.query_stamp_ns, closure.match_stamp_ns, pose.matrix(), pose.covariance, pose.kind_name
        )
        if result.added:
            kinds[pose.kind_name] += 1
            loops.append((result.query_node, result.match_node))

    # A closure reaches the graph once the odometry at its query stamp has (as on the robot).
    for stamp, odom, _ in frames:
        graph.add_odometry(stamp, odom)
        while pending and pending[0].query_stamp_ns <= stamp:
            add(pending.pop(0))
    for closure in pending:  # after the last odometry: the graph says why it skips them
        add(closure)
    diag = graph.diagnostics()
    skipped.update(diag["loops_skipped"])
    skipped = {k: v for k, v in skipped.items() if v}
    report = {
        "align": ALIGN,
        "evaluated_at": "pose-graph node stamps",
        "odometry_ape_rmse_m": None,
        "optimized_ape_rmse_m": None,
        "reduction_pct": None,
        "odometry_ape_max_m": None,
        "optimized_ape_max_m": None,
        "nodes": diag["nodes"],
        "nodes_with_ground_truth": 0,
        "loops_added": diag["loops_added"],
        "loops_added_by_kind": kinds,
        "loops_skipped": sum(skipped.values()),
        "loops_skipped_reasons": skipped,
    }
    truth = {stamp: g for stamp, _, g in frames if g is not None}
    nodes = [
        (s, o, p) for (s, o), (_, p) in zip(graph.odometry_poses(), graph.optimized_poses(), strict=True)
    ]
    keep = [i for i, (s, _, _) in enumerate(nodes) if s in truth]
    report["nodes_with_ground_truth"] = len(keep)
    if len(keep) < 3:  # Umeyama needs a few non-collinear positions
        return report
    from .trajectory import ape_rmse, plot_trajectories

    ref = np.stack([truth[nodes[i][0]] for i in keep])
    odo = np.stack([nodes[i][1] for i in keep])
    opt = np.stack([nodes[i][2] for i in keep])
    before, after = ape_rmse(ref, odo, align=ALIGN), ape_rmse(ref, opt, align=ALIGN)
    report.update(
        odometry_ape_rmse_m=before.rmse,
        optimized_ape_rmse_m=after.rmse,
        odometry_ape_max_m=before.max,
        optimized_ape_max_m=after.max,
        reduction_pct=100.0 * (before.rmse - after.rmse) / before.rmse if before.rmse > 0 else None,
    )
    if plot_path is not None:
        index = {node: k for k, node in enumerate(keep)}
        pairs = [(index[q], index[m]) for q, m in loops if q in index and m in index]
        report["plot"] = str(plot_trajectories(plot_path, ref, odo, opt, pairs, title))
    return report


def drift_report_for_run(
    run: RunRecord,
    params: PoseGraphParams | None = None,
    plot_path: str | Path | None = None,
    title: str = "",
) -> dict | None:
    """``drift_report`` over what an offline run recorded (None when no frame had odometry).
    Ground-truth body poses are the frames' camera poses @ inv(base_T_camera)."""
    if not any(o is not None for o in run.frame_odometry.values()):
        return None
    camera_T_base = invert_pose(run.base_T_camera) if run.base_T_camera is not None else np.eye(4)
    frames = sorted(run.frame_odometry)
    gt_body = [
        None if run.frame_poses.get(i) is None else np.asarray(run.frame_poses[i]) @ camera_T_base
        for i in frames
    ]
    return drift_report(
        [run.frame_stamps_ns[i] for i in frames],
        [run.frame_odometry[i] for i in frames],
        gt_body,
        run.closures,
        params,
        plot_path,
        title,
    )
