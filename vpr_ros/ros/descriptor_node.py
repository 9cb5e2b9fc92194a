"""Descriptor node (one per camera): keyframes -> global descriptors -> map -> candidates.

Subscribes to an Image or CompressedImage topic (plus optional CameraInfo, aligned depth and
odometry), gates keyframes, encodes them, retrieves top-k map keyframes outside the recent
window and publishes vpr/candidates (with the query keyframe) and vpr/keyframes.

A lifecycle node: configure reads parameters and creates publishers and services, activate
loads the model and the saved map (``map_path``) and starts listening, deactivate saves the
map and frees the model. It brings itself up unless ``autostart`` is false.

The map is saved on deactivate/shutdown, every ``map_save_period`` seconds when it changed,
and on the ``vpr/save_map`` service; ``vpr/load_map`` and ``vpr/reset_map`` replace it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, deque
from pathlib import Path

import numpy as np
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..image_conversion import BadImageError
from ..map_store import MapStore, PayloadWriter, load_map, open_map
from ..msg import Keyframe as KeyframeMsg
from ..msg import LoopCandidates, MapInfo
from ..pipeline import DescriptorStage
from ..runtime_stats import LatencyWindow
from ..srv import LoadMap, ResetMap, SaveMap
from ..types import Frame
from .conversions import (
    camera_matrix_from_info,
    depth_msg_to_array,
    image_msg_to_rgb,
    keyframe_to_msg,
    pose_to_matrix,
    sec_to_stamp,
    stamp_to_sec,
)
from .diagnostics import OK, WARN, NodeDiagnostics
from .managed import SUCCESS, ManagedNode, free_accelerator_memory
from .params import declare_pipeline_parameters, read_pipeline_config
from .qos import LATCHED
from .worker import BoundedWorker

PARAMETERS = [
    "model",
    "weights",
    "device",
    "precision",
    "keyframe_min_period",
    "keyframe_min_translation",
    "keyframe_min_rotation_deg",
    "top_k",
    "exclude_recent_keyframes",
    "exclude_recent_seconds",
    "index_factory",
    "map_device",
    "localization_only",
    "reranker",  # which model local features the keyframes must carry
    "verification_image_width",
    "queue_size",
]
# Sensor streams are matched to an image by stamp within this tolerance (seconds).
SYNC_TOLERANCE = 0.05


def image_qos(reliability: str, depth: int) -> QoSProfile:
    if reliability not in ("reliable", "best_effort"):
        raise ValueError(f"image_reliability must be 'reliable' or 'best_effort', got '{reliability}'")
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy)


def _nearest(buffer: deque, stamp: float, tolerance: float):
    best = min(buffer, key=lambda item: abs(item[0] - stamp), default=None)
    return best[1] if best is not None and abs(best[0] - stamp) <= tolerance else None


class DescriptorNode(ManagedNode):
    def __init__(self, **kwargs):
        # destroy_node may run even when the constructor fails half-way (rclpy.try_shutdown).
        self.worker = self.stage = self.store = self.payloads = None
        self.active = False
        super().__init__("descriptor_node", **kwargs)
        declare_pipeline_parameters(self, PARAMETERS)
        self.declare_parameter("image_topic", "/camera/image_raw")
        self.declare_parameter("compressed", False)
        self.declare_parameter("camera_info_topic", "")
        self.declare_parameter("depth_topic", "")
        self.declare_parameter("odom_topic", "")
        self.declare_parameter("image_reliability", "reliable")
        self.declare_parameter("camera_name", "")
        self.declare_parameter(
            "map_path",
            "",
            ParameterDescriptor(description="directory of the saved map ('' = keep the map in memory only)"),
        )
        self.declare_parameter(
            "map_save_period",
            60.0,
            ParameterDescriptor(description="seconds between automatic saves of a changed map (0 = off)"),
        )
        self.declare_parameter(
            "diagnostics_period", 1.0, ParameterDescriptor(description="seconds between /diagnostics")
        )

        self.stage: DescriptorStage | None = None
        self.store: MapStore | None = None
        self.payloads: PayloadWriter | None = None  # writes keyframe data into the map directory
        self.worker: BoundedWorker | None = None
        self.counts: Counter = Counter()
        self.encode_ms, self.search_ms = LatencyWindow(), LatencyWindow()
        self._camera_matrix = None
        self._camera_info_size = None
        self._depth: deque = deque(maxlen=10)
        self._poses: deque = deque(maxlen=200)
        self._active_subs: list = []
        self._save_timer = None
        self._map_services: list = []
        self._publishers_made = False
        # The map lock covers map changes (a frame's search+add, reset, load) and snapshots;
        # the save lock keeps saves (timer, service, shutdown) one at a time.
        self._map_lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._map_version = 0  # bumps on every change; a save records the version it wrote
        self._saved_version = 0
        self._session = ""
        self._last_save: dict = {}
        self._last_diag_dropped = 0
        self._maintenance = MutuallyExclusiveCallbackGroup()  # saves never block image callbacks
        self.diagnostics = NodeDiagnostics(
            self, "descriptor", self._diagnostics, self.get_parameter("diagnostics_period").value
        )
        self.autostart()

    # -- lifecycle -----------------------------------------------------------------------------
    def _configure(self) -> None:
        self.config = read_pipeline_config(self, PARAMETERS)
        self.camera = self.get_parameter("camera_name").value or self.get_name()
        self.map_path = self.get_parameter("map_path").value
        self.image_qos = image_qos(self.get_parameter("image_reliability").value, self.config.queue_size)
        if not self._publishers_made:
            self.keyframe_pub = self.create_lifecycle_publisher(KeyframeMsg, "vpr/keyframes", 10)
            self.candidates_pub = self.create_lifecycle_publisher(LoopCandidates, "vpr/candidates", 10)
            self.map_info_pub = self.create_publisher(MapInfo, "vpr/map_info", LATCHED)
            group = self._maintenance
            self._map_services = [
                self.create_service(SaveMap, "vpr/save_map", self._srv_save, callback_group=group),
                self.create_service(LoadMap, "vpr/load_map", self._srv_load, callback_group=group),
                self.create_service(ResetMap, "vpr/reset_map", self._srv_reset, callback_group=group),
            ]
            self._publishers_made = True

    def on_activate(self, state):
        result = self.run_transition("activate", self._activate)
        if result != SUCCESS:
            self.stage, self.store = None, None
            return result
        return super().on_activate(state)  # enables the lifecycle publishers

    def _activate(self) -> None:
        t0 = time.monotonic()
        stage = DescriptorStage(self.config, camera=self.camera)  # fails fast on a missing checkpoint
        dim = stage.encoder.descriptor_dim
        store, info = None, None
        if self.map_path:
            stage.map, store, info = open_map(
                self.map_path, self.config.model, dim, self.config.index_factory, self.config.map_device
            )
            if info is not None and info.index_factory != self.config.index_factory:
                self.get_logger().warn(
                    f"saved map uses index '{info.index_factory}', not '{self.config.index_factory}': "
                    "keeping the saved index"
                )
        with self._map_lock:
            self.stage, self.store = stage, store
            self.payloads = self._payload_writer(store)
            self._map_version = self._saved_version = 0
        self.get_logger().info(
            f"model '{self.config.model}' on {stage.encoder.device}, {dim}-D, "
            f"map index '{stage.map.index_factory}'{' on GPU' if stage.map.on_gpu else ''}; "
            + (
                f"map {self.map_path}: {len(stage.map)} keyframes loaded, next id {stage.map.next_id}"
                if info is not None
                else (f"new map at {self.map_path}" if self.map_path else "map in memory only")
            )
            + (" (localisation only)" if self.config.localization_only else "")
            + f" ({time.monotonic() - t0:.1f} s)"
        )
        self.worker = BoundedWorker(self._process, self.config.queue_size, self.get_logger(), "descriptor")
        topic = self.get_parameter("image_topic").value
        msg_type = CompressedImage if self.get_parameter("compressed").value else Image
        subs = [self.create_subscription(msg_type, topic, self._on_image, self.image_qos)]
        if info_topic := self.get_parameter("camera_info_topic").value:
            subs.append(self.create_subscription(CameraInfo, info_topic, self._on_camera_info, 10))
        if depth_topic := self.get_parameter("depth_topic").value:
            subs.append(self.create_subscription(Image, depth_topic, self._on_depth, self.image_qos))
        if odom_topic := self.get_parameter("odom_topic").value:
            subs.append(self.create_subscription(Odometry, odom_topic, self._on_odom, 50))
        self._active_subs = subs
        period = float(self.get_parameter("map_save_period").value)
        if self.map_path and period > 0:
            self._save_timer = self.create_timer(
                period, self._on_save_timer, callback_group=self._maintenance
            )
        self.active = True
        self._new_session("activated")
        self.get_logger().info(f"listening on {topic} ({msg_type.__name__})")

    def _deactivate(self) -> None:
        self.active = False
        for sub in self._active_subs:
            self.destroy_subscription(sub)
        self._active_subs = []
        if self._save_timer is not None:
            self.destroy_timer(self._save_timer)
            self._save_timer = None
        self._stop_worker()
        self._save_on_exit()
        with self._map_lock:
            self.stage, self.store = None, None  # the model and the map go with the stage
            self._close_payloads()
        free_accelerator_memory()

    def destroy_node(self):
        # Also the SIGINT path: the ROS context may already be gone, so nothing here publishes.
        self.active = False
        self._stop_worker()
        self._save_on_exit()
        self._close_payloads()
        return super().destroy_node()

    def _payload_writer(self, store: MapStore | None) -> PayloadWriter | None:
        if store is None or self.config.localization_only:
            return None

        def failed(kf_id, exc):
            self.counts["map_payload_errors"] += 1
            self.get_logger().error(f"could not store keyframe {kf_id} in {store.root}: {exc}")

        return PayloadWriter(store, on_error=failed)

    def _close_payloads(self) -> None:
        if self.payloads is not None:
            self.payloads.close()
            self.payloads = None

    # -- callbacks: cheap, never block -------------------------------------------------------
    def _on_image(self, msg) -> None:
        self.counts["frames_in"] += 1
        worker = self.worker
        if worker is not None:
            worker.submit(msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_matrix = camera_matrix_from_info(msg)
        self._camera_info_size = (msg.height, msg.width)

    def _on_depth(self, msg: Image) -> None:
        self._depth.append((stamp_to_sec(msg.header.stamp), msg))

    def _on_odom(self, msg: Odometry) -> None:
        self._poses.append((stamp_to_sec(msg.header.stamp), pose_to_matrix(msg.pose.pose)))

    # -- worker --------------------------------------------------------------------------------
    def _process(self, msg) -> None:
        stamp = stamp_to_sec(msg.header.stamp)
        try:
            rgb = image_msg_to_rgb(msg)
        except BadImageError as err:
            self.counts[f"bad_image.{err.reason}"] += 1
            self.get_logger().warn(f"skipping image at t={stamp:.3f}: {err}")
            return
        camera_matrix = self._camera_matrix
        if camera_matrix is not None and self._camera_info_size and self._camera_info_size[1]:
            scale = rgb.shape[1] / self._camera_info_size[1]  # CameraInfo may be for another resolution
            camera_matrix = np.diag([scale, scale, 1.0]) @ camera_matrix
        depth = None
        if (depth_msg := _nearest(self._depth, stamp, SYNC_TOLERANCE)) is not None:
            try:
                depth = depth_msg_to_array(depth_msg)
                if depth.shape != rgb.shape[:2]:
                    self.counts["depth_size_mismatch"] += 1
                    depth = None
            except BadImageError as err:
                self.counts[f"bad_depth.{err.reason}"] += 1
        pose = _nearest(self._poses, stamp, SYNC_TOLERANCE * 2)
        frame = Frame(stamp, rgb, msg.header.frame_id, camera_matrix, depth, pose)
        with self._map_lock:
            stage = self.stage
            if stage is None:
                return
            result, reason = stage.process(frame)
            if result is None:
                self.counts[f"gate.{reason}"] += 1
                return
            if not self.config.localization_only:
                self._map_version += 1
                if self.payloads is not None:
                    # Queued before any snapshot can name this keyframe (snapshots take the lock);
                    # a save waits for the queue before it commits.
                    self.payloads.submit(result.keyframe)
        self.counts["keyframes"] += 1
        self.encode_ms.add(result.encode_ms)
        self.search_ms.add(result.search_ms)
        kf = result.keyframe
        self.keyframe_pub.publish(keyframe_to_msg(kf, self.config.model, with_image=False))
        out = LoopCandidates()
        out.header = msg.header
        out.query = keyframe_to_msg(kf, self.config.model, with_image=True)
        out.candidate_ids = [c.id for c in result.candidates]
        out.candidate_stamps = [sec_to_stamp(c.stamp) for c in result.candidates]
        out.similarities = [c.similarity for c in result.candidates]
        self.candidates_pub.publish(out)

    # -- map persistence -------------------------------------------------------------------------
    def save_map(self, path: str = "") -> tuple[str, int, float]:
        """Save the map (to ``path``, default map_path); returns (directory, keyframes, seconds)."""
        with self._save_lock:
            t0 = time.monotonic()
            with self._map_lock:
                if self.stage is None:
                    raise RuntimeError("the node is not active (no map loaded)")
                snap = self.stage.map.snapshot()
                version, store, payloads = self._map_version, self.store, self.payloads
            if payloads is not None:
                payloads.flush()  # every keyframe the snapshot names has its data on disk
            own = store is not None and (not path or Path(path).resolve() == store.root.resolve())
            if own:
                target = store
            elif path:
                map_id = store.map_id if store is not None else None
                target = MapStore(path, self.config.model, map_id=map_id)
            else:
                raise RuntimeError("no path given and map_path is empty")
            try:
                target.save(snap, payload_source=None if own or store is None else store.root)
            except Exception:
                self.counts["map_save_failures"] += 1
                raise
            seconds = time.monotonic() - t0
            if own:
                self._saved_version = version
            self.counts["map_saves"] += 1
            self._last_save = {"time": time.monotonic(), "seconds": seconds, "keyframes": snap.num_keyframes}
            return str(target.root), snap.num_keyframes, seconds

    def _save_on_exit(self) -> None:
        if self.store is None or self.stage is None or self.config.localization_only:
            return
        if self._map_version == self._saved_version and (self.store.root / "map.json").is_file():
            return
        try:
            path, n, seconds = self.save_map()
            print(f"[{self.get_name()}] map saved to {path}: {n} keyframes ({seconds:.2f} s)", flush=True)
        except Exception as exc:
            print(f"[{self.get_name()}] map NOT saved: {type(exc).__name__}: {exc}", flush=True)

    def _on_save_timer(self) -> None:
        if self.config.localization_only or self._map_version == self._saved_version:
            return
        try:
            path, n, seconds = self.save_map()
            self.get_logger().debug(f"map saved to {path}: {n} keyframes ({seconds:.2f} s)")
            self._publish_map_info("saved")
        except Exception as exc:
            self.get_logger().error(f"periodic map save failed: {type(exc).__name__}: {exc}")

    def _new_session(self, event: str) -> None:
        self._session = uuid.uuid4().hex
        self._publish_map_info(event)

    def _publish_map_info(self, event: str) -> None:
        with self._map_lock:
            stage, store = self.stage, self.store
            if stage is None:
                return
            msg = MapInfo(
                session=self._session,
                map_id=store.map_id if store is not None else "",
                path=str(store.root.resolve()) if store is not None else "",
                model=self.config.model,
                descriptor_dim=stage.map.dim,
                index_factory=stage.map.index_factory,
                num_keyframes=len(stage.map),
                next_id=stage.map.next_id,
                localization_only=self.config.localization_only,
                event=event,
            )
        msg.header.stamp = self.get_clock().now().to_msg()
        self.map_info_pub.publish(msg)

    # -- services ----------------------------------------------------------------------------------
    def _srv_save(self, request, response):
        try:
            response.path, response.num_keyframes, response.seconds = self.save_map(request.path)
            response.success = True
            response.message = f"saved {response.num_keyframes} keyframes to {response.path}"
            self._publish_map_info("saved")
        except Exception as exc:
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        self.get_logger().info(f"save_map: {response.message}")
        return response

    def _srv_load(self, request, response):
        try:
            if self.stage is None:
                raise RuntimeError("the node is not active")
            path = request.path or self.map_path
            if not path:
                raise RuntimeError("no path given and map_path is empty")
            dim = self.stage.encoder.descriptor_dim
            kmap, info = load_map(path, self.config.model, dim, device=self.config.map_device)
            with self._map_lock:
                self._close_payloads()  # finish writing the old map's keyframes first
                store = MapStore(path, self.config.model, map_id=info.map_id)
                store.discard_unsaved_payloads(info.next_id)
                self.stage.map, self.store = kmap, store
                self.payloads = self._payload_writer(store)
                self.stage.gate.reset()
                self._map_version = self._saved_version = 0
                self.map_path = path
            self._new_session("loaded")
            response.success, response.num_keyframes, response.next_id = True, len(kmap), kmap.next_id
            response.message = f"loaded {len(kmap)} keyframes from {path}"
        except Exception as exc:
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        self.get_logger().info(f"load_map: {response.message}")
        return response

    def _srv_reset(self, request, response):
        with self._map_lock:
            if self.stage is None:
                response.success, response.message = False, "the node is not active"
                return response
            removed = len(self.stage.map)
            self.stage.map.clear()
            self.stage.gate.reset()
            if self.store is not None:
                self.store.map_id = uuid.uuid4().hex  # a new map from here on
            self._map_version += 1
        self._new_session("reset")
        response.success = True
        response.message = f"map reset ({removed} keyframes removed; next id {self.stage.map.next_id})"
        self.get_logger().info(f"reset_map: {response.message}")
        return response

    # -- diagnostics -------------------------------------------------------------------------------
    def _diagnostics(self):
        worker, stage = self.worker, self.stage
        dropped = self.worker_count("dropped")
        values = {
            "active": self.active,
            "model": self.config.model if hasattr(self, "config") else "",
            "localization_only": bool(getattr(self, "config", None) and self.config.localization_only),
            "frames_in": self.counts["frames_in"],
            # 0 means no re-ranker is connected: keyframes go nowhere (a DDS discovery problem).
            "candidates_subscribers": self.candidates_pub.get_subscription_count()
            if hasattr(self, "candidates_pub")
            else 0,
            "frames_processed": self.worker_count("processed"),
            "frames_dropped": dropped,
            "queue_length": worker.pending if worker else 0,
            "worker_errors": self.worker_count("errors"),
            "keyframes": self.counts["keyframes"],
        }
        values.update(
            sorted(
                (k, v)
                for k, v in self.counts.items()
                if k.startswith(("bad_image.", "bad_depth.", "gate.", "depth_size_mismatch"))
            )
        )
        values.update(self.encode_ms.summary("encode_ms"))
        values.update(self.search_ms.summary("search_ms"))
        if stage is not None:
            values["map_keyframes"] = len(stage.map)
            values["map_next_id"] = stage.map.next_id
        values["map_path"] = self.map_path if hasattr(self, "map_path") else ""
        values["map_saves"] = self.counts["map_saves"]
        values["map_payload_queue"] = self.payloads.pending if self.payloads is not None else 0
        values["map_payload_errors"] = self.counts["map_payload_errors"]
        values["map_save_failures"] = self.counts["map_save_failures"]
        if self._last_save:
            values["map_last_save_s"] = self._last_save["seconds"]
            values["map_seconds_since_save"] = time.monotonic() - self._last_save["time"]
        new_drops, self._last_diag_dropped = dropped - self._last_diag_dropped, dropped
        if not self.active:
            return WARN, "inactive: not processing images", values
        if new_drops:
            return WARN, f"dropped {new_drops} frames since the last report (slower than the camera)", values
        if self.counts["map_save_failures"]:
            return WARN, f"{self.counts['map_save_failures']} map saves failed", values
        size = len(stage.map) if stage is not None else 0
        return OK, f"{self.counts['keyframes']} keyframes, map {size}", values


def main(args=None) -> None:
    from .spin import run_nodes

    run_nodes([DescriptorNode], args)


if __name__ == "__main__":
    main()
