"""A GTSAM iSAM2 pose graph over odometry and loop closures (ROS-free).

Frames:
- ``odom``: the odometry's fixed frame; ``odom_T_base`` is the robot body in it (what a
  nav_msgs/Odometry carries).
- ``map``: the optimised frame. Node 0 gets a tight prior at its odometry pose, so map and
  odom coincide until loops correct the drift. ``optimized_poses`` are map_T_base per node
  and ``map_T_odom`` (latest node's map_T_base * inv(its odom_T_base)) is the correction a
  node publishes as the map -> odom transform.
- A loop's ``match_base_T_query_base`` is the query body pose in the match body frame, with
  a 6x6 covariance in ROS order (x, y, z, rot_x, rot_y, rot_z) and perturbation on the right
  (as ``vpr_ros.types.RelativePose``). GTSAM's Pose3 tangent is (rot, trans) with the same
  right perturbation, so only the blocks are permuted (``covariance_ros_to_gtsam``).
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from dataclasses import dataclass

import gtsam
import numpy as np
from gtsam.symbol_shorthand import X

from ..constraints import clamped_eigen, covariance_ros_to_gtsam, information_matrix  # noqa: F401
from ..geometry import invert_pose, is_valid_pose, rotation_angle_deg
from ..pose_buffer import PoseBuffer
from .params import KERNELS, POSE_KINDS, PoseGraphParams  # noqa: F401 - re-exported

_KERNEL_FACTORIES = {
    "cauchy": gtsam.noiseModel.mEstimator.Cauchy.Create,
    "huber": gtsam.noiseModel.mEstimator.Huber.Create,
    "none": None,
}
PRIOR_SIGMA = 1e-6  # node 0 pins the map frame to the odometry frame
# Variance clamps: a zero variance would make an infinite information, an infinite one NaNs.
MIN_VARIANCE, MAX_VARIANCE = 1e-12, 1e12


@dataclass(frozen=True)
class LoopResult:
    added: bool
    reason: str  # "added" or why the loop was skipped
    query_node: int | None = None
    match_node: int | None = None
    between: np.ndarray | None = None  # the match_node_T_query_node constraint that was added


class PoseGraph:
    """Odometry nodes, odometry between-factors and robust loop factors, solved by iSAM2."""

    def __init__(self, params: PoseGraphParams | None = None):
        self.params = p = params or PoseGraphParams()
        isam_params = gtsam.ISAM2Params()
        isam_params.setRelinearizeThreshold(p.relinearize_threshold)
        isam_params.relinearizeSkip = 1
        self._isam = gtsam.ISAM2(isam_params)
        self._history = PoseBuffer(p.odometry_history_capacity)
        self._max_gap_ns = round(p.odometry_max_gap_s * 1e9)
        self._tolerance_ns = round(p.loop_stamp_tolerance_s * 1e9)
        self._node_stamps: list[int] = []
        self._node_odom: list[np.ndarray] = []
        self._pending_graph = gtsam.NonlinearFactorGraph()
        self._pending_values = gtsam.Values()
        self._pending_loops = 0
        self._counts = Counter()
        self._skipped = Counter()
        self._last_update_ms = 0.0
        self._update_ms = {"node": [0, 0.0], "loop": [0, 0.0]}  # [count, total ms]

    # -- odometry -------------------------------------------------------------------------

    def add_odometry(self, stamp_ns: int, odom_T_base: np.ndarray, update: bool = True) -> bool:
        """Record an odometry pose; True when it created a graph node (then iSAM2 updates
        unless ``update`` is False). Late messages only go into the history."""
        stamp_ns = int(stamp_ns)
        pose = np.asarray(odom_T_base, dtype=np.float64)
        if not is_valid_pose(pose):
            self._counts["odometry_invalid"] += 1
            return False
        self._counts["odometry"] += 1
        self._history.add(stamp_ns, pose)
        if self._node_stamps and stamp_ns <= self._node_stamps[-1]:
            self._counts["odometry_late"] += 1
            return False
        if not self._node_stamps:
            sigmas = np.full(6, PRIOR_SIGMA)
            self._pending_graph.add(
                gtsam.PriorFactorPose3(X(0), gtsam.Pose3(pose), gtsam.noiseModel.Diagonal.Sigmas(sigmas))
            )
            self._pending_values.insert(X(0), gtsam.Pose3(pose))
        else:
            p = self.params
            delta = invert_pose(self._node_odom[-1]) @ pose
            distance = float(np.linalg.norm(delta[:3, 3]))
            if (
                distance < p.node_min_translation
                and rotation_angle_deg(delta[:3, :3]) < p.node_min_rotation_deg
                and stamp_ns - self._node_stamps[-1] < p.node_max_period_s * 1e9
            ):
                return False
            k = len(self._node_stamps)
            rot = max(p.odom_min_rotation_sigma_deg, p.odom_rotation_sigma_deg_per_m * distance)
            trans = max(p.odom_min_translation_sigma, p.odom_translation_sigma_per_m * distance)
            noise = gtsam.noiseModel.Diagonal.Sigmas(np.array([math.radians(rot)] * 3 + [trans] * 3))
            self._pending_graph.add(gtsam.BetweenFactorPose3(X(k - 1), X(k), gtsam.Pose3(delta), noise))
            # Start the new node where odometry puts it relative to the optimised previous one.
            self._pending_values.insert(X(k), self._estimate(k - 1).compose(gtsam.Pose3(delta)))
        self._node_stamps.append(stamp_ns)
        self._node_odom.append(pose.copy())
        if update:
            self.update()
        return True

    def _estimate(self, k: int) -> gtsam.Pose3:
        if self._pending_values.exists(X(k)):
            return self._pending_values.atPose3(X(k))
        return self._isam.calculateEstimatePose3(X(k))

    # -- loops ----------------------------------------------------------------------------

    def _anchor(self, stamp_ns: int) -> tuple[int, np.ndarray] | str:
        """(node, node_T_stamp): the node at exactly ``stamp_ns`` with identity, else the
        nearest node with the odometry between the two; or the reason there is none."""
        stamps = self._node_stamps
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return i, np.eye(4)
        odom = self._history.at(stamp_ns, self._max_gap_ns)
        if odom is None:
            span = self._history.span()
            if span is None or stamp_ns < span[0]:
                return "before_odometry_history"
            return "after_odometry" if stamp_ns > span[1] else "odometry_gap"
        near = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
        j = min(near, key=lambda n: abs(stamps[n] - stamp_ns), default=None)
        if j is None or abs(stamps[j] - stamp_ns) > self._tolerance_ns:
            return "no_node_near_stamp"
        return j, invert_pose(self._node_odom[j]) @ odom

    def _skip(self, reason: str) -> LoopResult:
        self._skipped[reason] += 1
        return LoopResult(False, reason)

    def add_loop(
        self,
        query_stamp_ns: int,
        match_stamp_ns: int,
        match_base_T_query_base: np.ndarray,
        covariance_ros: np.ndarray,
        pose_kind: str = "metric",
        update: bool = True,
    ) -> LoopResult:
        """Add a loop factor between the nodes at (or nearest to) the two stamps; iSAM2
        updates unless ``update`` is False (to batch several loops into one update)."""
        if pose_kind not in POSE_KINDS:
            raise ValueError(f"pose_kind must be one of {POSE_KINDS}, got {pose_kind!r}")
        measured = np.asarray(match_base_T_query_base, dtype=np.float64)
        if not is_valid_pose(measured):
            return self._skip("invalid_pose")
        cov = covariance_ros_to_gtsam(covariance_ros)
        if pose_kind == "rotation_only":
            cov[3:, :] = 0.0
            cov[:, 3:] = 0.0
            cov[3:, 3:] = np.eye(3) * self.params.rotation_only_translation_sigma**2
        if not np.all(np.isfinite(cov)):
            return self._skip("invalid_covariance")
        query = self._anchor(int(query_stamp_ns))
        if isinstance(query, str):
            return self._skip("query_" + query)
        match = self._anchor(int(match_stamp_ns))
        if isinstance(match, str):
            return self._skip("match_" + match)
        (qi, node_T_query), (mi, node_T_match) = query, match
        if qi == mi:
            return self._skip("same_node")
        # X(m)^-1 X(q) = node_T_match * match_T_query * inv(node_T_query). The right
        # perturbation moves through inv(node_T_query): covariance' = Ad * cov * Ad^T.
        between = gtsam.Pose3(node_T_match @ measured @ invert_pose(node_T_query))
        adjoint = gtsam.Pose3(node_T_query).AdjointMap()
        w, v = clamped_eigen(adjoint @ cov @ adjoint.T, MIN_VARIANCE, MAX_VARIANCE)
        noise = gtsam.noiseModel.Gaussian.Covariance((v * w) @ v.T)
        kernel = _KERNEL_FACTORIES[self.params.loop_kernel]
        if kernel is not None:
            noise = gtsam.noiseModel.Robust.Create(kernel(self.params.loop_kernel_param), noise)
        self._pending_graph.add(gtsam.BetweenFactorPose3(X(mi), X(qi), between, noise))
        self._pending_loops += 1
        self._counts["loops_added"] += 1
        if update:
            self.update()
        return LoopResult(True, "added", qi, mi, between.matrix())

    # -- solving and results --------------------------------------------------------------

    def update(self) -> None:
        """Run iSAM2 on everything added since the last update, in one batch."""
        if self._pending_graph.size() == 0:
            return
        start = time.perf_counter()
        self._isam.update(self._pending_graph, self._pending_values)
        for _ in range(self.params.loop_extra_updates if self._pending_loops else 0):
            self._isam.update()
        self._last_update_ms = (time.perf_counter() - start) * 1e3
        totals = self._update_ms["loop" if self._pending_loops else "node"]
        totals[0] += 1
        totals[1] += self._last_update_ms
        self._pending_graph = gtsam.NonlinearFactorGraph()
        self._pending_values = gtsam.Values()
        self._pending_loops = 0

    def optimized_poses(self) -> list[tuple[int, np.ndarray]]:
        """(stamp_ns, map_T_base) of every node, after flushing pending additions."""
        self.update()
        if not self._node_stamps:
            return []
        estimate = self._isam.calculateEstimate()
        return [(s, estimate.atPose3(X(k)).matrix()) for k, s in enumerate(self._node_stamps)]

    def odometry_poses(self) -> list[tuple[int, np.ndarray]]:
        """(stamp_ns, odom_T_base) of every node: the raw odometry the nodes were made from."""
        return [(s, m.copy()) for s, m in zip(self._node_stamps, self._node_odom, strict=True)]

    def map_T_odom(self) -> np.ndarray:
        """Latest node's optimised pose times the inverse of its odometry pose (identity
        before the first node)."""
        self.update()
        if not self._node_stamps:
            return np.eye(4)
        k = len(self._node_stamps) - 1
        return self._isam.calculateEstimatePose3(X(k)).matrix() @ invert_pose(self._node_odom[k])

    def diagnostics(self) -> dict:
        def mean(kind):
            count, total = self._update_ms[kind]
            return total / count if count else 0.0

        return {
            "nodes": len(self._node_stamps),
            "odometry_messages": self._counts["odometry"],
            "odometry_late": self._counts["odometry_late"],
            "odometry_invalid": self._counts["odometry_invalid"],
            "history": len(self._history),
            "loops_added": self._counts["loops_added"],
            "loops_skipped": dict(self._skipped),
            "last_update_ms": self._last_update_ms,
            "mean_node_update_ms": mean("node"),
            "mean_loop_update_ms": mean("loop"),
        }
