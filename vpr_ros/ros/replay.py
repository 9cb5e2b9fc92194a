"""Replay evaluation: frames through the real ROS 2 graph, scored on what comes back.

The node executables (or the one-process ``vpr_graph``) start as child processes on a
private ROS_DOMAIN_ID with the same parameters as an offline run. A ``SequencePlayer``
publishes every frame (rgb8 sensor_msgs/Image, plus CameraInfo when the intrinsics are
known) at a fixed rate without waiting for the graph, so frames the graph cannot keep up
with are dropped as on a robot, and records what arrives on vpr/keyframes, vpr/verified,
vpr/loop_closures and vpr/rejected. Keyframe latency is the time from publishing a frame
to the arrival of the loop-closure decision on it.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor

from ..config import PipelineConfig
from ..evaluation.run import ClosureRecord, KeyframeRecord, RunRecord
from ..evaluation.sources import SourceFrame
from ..msg import LoopClosureArray
from ..node_parameters import NODE_PARAMETERS
from . import processes
from .conversions import stamp_to_ns, verification_from_msg
from .player import SequencePlayer, as_time

IMAGE_TOPIC = "/vpr_eval/image_raw"
CAMERA_INFO_TOPIC = "/vpr_eval/camera_info"
GRAPHS = {
    "processes": ["descriptor_node", "reranker_node", "loop_closure_node"],
    "single": ["vpr_graph"],
}


class ReplayError(RuntimeError):
    pass


def private_domain_id() -> int:
    """A ROS_DOMAIN_ID away from 0 and from the test suite's 10-59 range."""
    return processes.private_domain_id(60, 30)


def node_parameters(config: PipelineConfig, params: dict) -> dict:
    """Everything the nodes need, typed like their declarations (a 0 stays a double)."""
    # to_dict(): the re-rankers' parameters are not fields of PipelineConfig.
    out = {k: v for k, v in config.to_dict().items() if k in params}
    # Rows with replay=False (map_path, autostart...) are never taken from the user's file: a
    # persistent map would be loaded into (and saved over by) the evaluation.
    out.update({k: v for k, v in params.items() if k in NODE_PARAMETERS and NODE_PARAMETERS[k].replay})
    out.update(
        image_topic=IMAGE_TOPIC,
        camera_info_topic=CAMERA_INFO_TOPIC,
        compressed=False,
        publish_rejected=True,  # every keyframe's decision must come back
    )
    return out


class ReplayPlayer(SequencePlayer):
    """SequencePlayer that also keeps descriptors, verified candidates and arrival times."""

    def __init__(self, **kwargs):
        super().__init__(IMAGE_TOPIC, CAMERA_INFO_TOPIC, **kwargs)
        self.published_at: dict[int, float] = {}  # stamp (ns) -> monotonic publish time
        self.descriptors: dict[int, np.ndarray] = {}
        self.best: dict[int, tuple[int, float, float]] = {}  # query id -> (match id, score, similarity)
        self.candidate_ids: dict[int, list[int]] = {}
        self.decided_at: dict[int, float] = {}
        self.status: dict[int, int] = {}
        self.last_message = time.monotonic()
        self.create_subscription(LoopClosureArray, "vpr/verified", self._on_verified, 100)

    def publish_frame(self, image, stamp, camera_matrix=None, **streams) -> None:
        self.published_at[stamp_to_ns(as_time(stamp))] = time.monotonic()
        super().publish_frame(image, stamp, camera_matrix, **streams)

    def _on_keyframe(self, msg) -> None:
        self.descriptors[int(msg.id)] = np.asarray(msg.descriptor, dtype=np.float32)
        self.last_message = time.monotonic()
        super()._on_keyframe(msg)

    def _on_verified(self, msg) -> None:
        self.last_message = time.monotonic()
        best = None
        for c in msg.closures:
            score = float(c.reranker_score)
            score = -np.inf if not np.isfinite(score) else score
            key = (score, float(c.similarity))
            if best is None or key > best[0]:
                best = (key, int(c.match_id))
        with self._lock:
            self.candidate_ids[int(msg.query_id)] = [int(c.match_id) for c in msg.closures]
            if best is not None:
                self.best[int(msg.query_id)] = (best[1], best[0][0], best[0][1])

    def _record_decision(self, msg) -> None:
        now = self.last_message = time.monotonic()
        self.decided_at.setdefault(int(msg.query_id), now)
        self.status[int(msg.query_id)] = int(msg.status)

    def _on_closure(self, msg) -> None:
        self._record_decision(msg)
        super()._on_closure(msg)

    def _on_rejected(self, msg) -> None:
        self._record_decision(msg)
        super()._on_rejected(msg)


def _closure_record(msg) -> ClosureRecord:
    """A published LoopClosure with its stamps and relative poses (camera and body)."""
    v = verification_from_msg(msg)
    return ClosureRecord(
        int(msg.query_id),
        int(msg.match_id),
        float(msg.similarity),
        float(msg.reranker_score),
        query_stamp_ns=stamp_to_ns(msg.query_stamp),
        match_stamp_ns=stamp_to_ns(msg.match_stamp),
        relative_pose=v.relative_pose,
        base_pose=v.base_pose,
        inliers=int(msg.inliers),
    )


def _ns(stamp: float) -> int:
    return int(round(stamp * 1e9))


def run_replay(
    frames: Iterable[SourceFrame],
    config: PipelineConfig,
    params: dict,
    rate_hz: float = 5.0,
    graph: str = "processes",
    domain_id: int | None = None,
    timeout: float = 120.0,
    settle_s: float = 3.0,
    log_dir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunRecord:
    """Publish ``frames`` at ``rate_hz`` into a freshly started graph; see the module doc."""
    if graph not in GRAPHS:
        raise ReplayError(f"graph must be one of {', '.join(GRAPHS)}, got '{graph}'")
    domain_id = private_domain_id() if domain_id is None else domain_id
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="vpr_replay_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    params_path = log_dir / "replay_params.yaml"
    params_path.write_text(
        yaml.safe_dump({"/**": {"ros__parameters": node_parameters(config, params)}}, sort_keys=False)
    )
    try:
        nodes = processes.NodeGroup(
            GRAPHS[graph], ["--ros-args", "--params-file", str(params_path)], domain_id, log_dir
        )
    except FileNotFoundError as err:
        raise ReplayError(f"{err}; or evaluate offline (without --replay)") from None
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    player = ReplayPlayer(context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(player)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    run = RunRecord("replay")
    try:
        try:
            player.wait_for_graph(timeout, abort=lambda: _died(nodes, "start-up"))
        except TimeoutError as err:
            raise ReplayError(f"{err}\n{nodes.logs()}") from None
        except RuntimeError as err:  # a node process died (the message has its log)
            raise ReplayError(str(err)) from None
        t_start = time.monotonic()
        published = 0
        for frame in frames:
            next_time = t_start + published / rate_hz
            time.sleep(max(0.0, next_time - time.monotonic()))
            run.frame_stamps[frame.index] = frame.stamp
            run.frame_poses[frame.index] = frame.pose
            player.publish_frame(frame.image, frame.stamp, frame.camera_matrix)
            published += 1
            if progress is not None:
                progress(1)
        publish_s = time.monotonic() - t_start
        # Wait until every keyframe that arrived has its decision and nothing moves any more.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with player._lock:
                pending = set(player.keyframes) - set(player.decided_at)
            if not pending and time.monotonic() - player.last_message > settle_s:
                break
            if error := _died(nodes, "replay"):
                raise ReplayError(error)
            time.sleep(0.1)
        run.wall_time_s = time.monotonic() - t_start
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        nodes.stop()
        player.destroy_node()
        rclpy.try_shutdown(context=context)

    frame_by_ns = {_ns(s): f for f, s in run.frame_stamps.items()}
    with player._lock:
        for kf_id, stamp_ns in sorted(player.keyframes.items()):
            frame = frame_by_ns.get(stamp_ns)
            if frame is None:
                continue
            best = player.best.get(kf_id)
            sent, decided = player.published_at.get(stamp_ns), player.decided_at.get(kf_id)
            run.keyframes.append(
                KeyframeRecord(
                    id=kf_id,
                    frame=frame,
                    stamp=run.frame_stamps[frame],
                    descriptor=player.descriptors.get(kf_id),
                    latency_ms=(decided - sent) * 1e3 if sent is not None and decided is not None else None,
                    best_match_id=None if best is None else best[0],
                    best_score=None if best is None else best[1],
                    best_similarity=None if best is None else best[2],
                    candidate_ids=player.candidate_ids.get(kf_id, []),
                    status=_status_name(player.status.get(kf_id)),
                )
            )
        run.closures = [_closure_record(m) for m in player.closures]
        decided = set(player.decided_at)
        received = set(player.keyframes)
    run.info = {
        "graph": graph,
        "domain_id": domain_id,
        "rate_hz": rate_hz,
        "achieved_rate_hz": published / publish_s if publish_s > 0 else None,
        "frames_published": published,
        "keyframes_received": len(received),
        "decisions_missing": len(received - decided),
        "logs": str(log_dir),
    }
    return run


def _died(nodes: processes.NodeGroup, phase: str) -> str | None:
    dead = nodes.dead()
    return f"node process(es) {', '.join(dead)} exited during {phase}:\n{nodes.logs()}" if dead else None


def _status_name(status: int | None) -> str:
    if status is None:
        return ""
    from ..types import LoopStatus

    try:
        return LoopStatus(status).name
    except ValueError:
        return str(status)
