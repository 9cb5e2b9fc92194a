"""Descriptor node (one per camera): keyframes -> global descriptors -> map -> candidates.

Subscribes to an Image or CompressedImage topic (plus optional CameraInfo, aligned depth and
odometry), gates keyframes, encodes them, retrieves top-k map keyframes outside the recent
window and publishes vpr/candidates (with the query keyframe) and vpr/keyframes.

A lifecycle node: configure reads parameters and creates publishers and services, activate
loads the model and the saved map (``map_path``) and starts listening, deactivate saves the
map and frees the model. It brings itself up unless ``autostart`` is false.

The map is saved on deactivate/shutdown, every ``map_save_period`` seconds when it changed,
and on the ``vpr/save_map`` service; ``vpr/load_map`` and ``vpr/reset_map`` replace it. All of
that lives in ``map.session.MapSession``; this node only turns ROS events into its calls.
"""

from __future__ import annotations

import time
from collections import Counter

from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..map import MapSession
from ..msg import Keyframe as KeyframeMsg
from ..msg import LoopCandidates, MapInfo
from ..pipeline import DescriptorStage
from ..runtime_stats import LatencyWindow
from ..srv import LoadMap, ResetMap, SaveMap
from .conversions import candidates_to_msg, keyframe_to_msg, map_info_to_msg
from .diagnostics import OK, WARN, NodeDiagnostics
from .extrinsics import CameraExtrinsics
from .guard import callback_errors, guarded
from .managed import SUCCESS, ManagedNode, free_accelerator_memory
from .params import declare_pipeline_parameters, parameter_value, read_pipeline_config
from .qos import LATCHED, image_qos
from .sensors import SensorSync
from .worker import BoundedWorker

PARAMETERS = [
    "max_image_pixels",
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
    "exclude_recent_distance_m",
    "stationary_similarity",
    "index_factory",
    "map_device",
    "localization_only",
    "reranker",  # which model local features the keyframes must carry
    "verification_image_width",
    "verification_upscale",
    "queue_size",
]


class DescriptorNode(ManagedNode):
    def __init__(self, **kwargs):
        # destroy_node may run even when the constructor fails half-way (rclpy.try_shutdown).
        self.worker = self.map_session = None
        self.active = False
        super().__init__("descriptor_node", **kwargs)
        declare_pipeline_parameters(self, PARAMETERS)
        # Node-only parameters (topics, map_path...) are declared by ManagedNode from their table.

        # The map, its files, locks and counters: outlives each activation's stage.
        self.map_session = MapSession(log=self.get_logger())
        self.worker: BoundedWorker | None = None
        self.counts: Counter = Counter()
        self.encode_ms, self.search_ms = LatencyWindow(), LatencyWindow()
        self.sensors = SensorSync(self.counts, self.get_logger())  # CameraInfo, depth, odometry
        self._extrinsics = None
        self._active_subs: list = []
        self._save_timer = None
        self._map_services: list = []
        self._publishers_made = False
        self._last_diag_dropped = 0
        self._maintenance = MutuallyExclusiveCallbackGroup()  # saves never block image callbacks
        self.diagnostics = NodeDiagnostics(
            self, "descriptor", self._diagnostics, self.get_parameter("diagnostics_period").value
        )
        self.autostart()

    @property
    def stage(self) -> DescriptorStage | None:
        """The active stage (model + map); None while inactive."""
        return self.map_session.stage if self.map_session is not None else None

    # -- lifecycle -----------------------------------------------------------------------------
    def _configure(self) -> None:
        self.config = read_pipeline_config(self, PARAMETERS)
        self.camera = self.get_parameter("camera_name").value or self.get_name()
        self.map_session.map_path = self.get_parameter("map_path").value
        self.image_qos = image_qos(self.get_parameter("image_reliability").value, self.config.queue_size)
        base_frame = self.get_parameter("base_frame").value
        sensors = self.sensors
        sensors.base_frame = base_frame
        sensors.odom_max_gap_ns = int(self.get_parameter("odom_max_gap").value * 1e9)
        if self._extrinsics is None:  # one tf2 listener for the node's lifetime
            self._extrinsics = CameraExtrinsics(self, base_frame, parameter_value(self, "camera_extrinsics"))
        sensors.extrinsics = self._extrinsics
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
            self.map_session.close()
            return result
        return super().on_activate(state)  # enables the lifecycle publishers

    def _activate(self) -> None:
        t0 = time.monotonic()
        stage = DescriptorStage(self.config, camera=self.camera)  # fails fast on a missing checkpoint
        opened = self.map_session.open(stage)  # fails on a damaged or foreign map
        self.get_logger().info(
            f"model '{self.config.model}' on {stage.encoder.device}, {stage.encoder.descriptor_dim}-D, "
            f"map index '{stage.map.index_factory}'{' on GPU' if stage.map.on_gpu else ''}; {opened}"
            + (" (localisation only)" if self.config.localization_only else "")
            + f" ({time.monotonic() - t0:.1f} s)"
        )
        self.worker = BoundedWorker(self._process, self.config.queue_size, self.get_logger(), "descriptor")
        topic = self.get_parameter("image_topic").value
        msg_type = CompressedImage if self.get_parameter("compressed").value else Image
        sensors, qos = self.sensors, self.image_qos
        # A bad message is counted and logged by the callback guard, never the node's end.
        subs = [self.create_subscription(msg_type, topic, guarded(self, "image", self._on_image), qos)]
        streams = [
            ("camera_info", CameraInfo, sensors.on_camera_info, 10),
            ("depth", Image, sensors.on_depth, qos),
            ("odom", Odometry, sensors.on_odom, 50),
        ]
        for name, msg_cls, callback, depth in streams:
            if stream_topic := self.get_parameter(f"{name}_topic").value:
                subs.append(
                    self.create_subscription(msg_cls, stream_topic, guarded(self, name, callback), depth)
                )
        self._active_subs = subs
        period = float(self.get_parameter("map_save_period").value)
        if self.map_session.map_path and period > 0:
            self._save_timer = self.create_timer(
                period, guarded(self, "map_save", self._on_save_timer), callback_group=self._maintenance
            )
        self.active = True
        self._publish_map_info("activated")
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
        self.map_session.close()  # the model and the map go with the stage
        free_accelerator_memory()

    def destroy_node(self):
        # Also the SIGINT path: the ROS context may already be gone, so nothing here publishes.
        self.active = False
        self._stop_worker()
        if self.map_session is not None:
            self._save_on_exit()
            self.map_session.close()
        return super().destroy_node()

    # -- images: the callback only queues, the worker does the rest ----------------------------
    def _on_image(self, msg) -> None:
        self.counts["frames_in"] += 1
        worker = self.worker
        if worker is not None:
            worker.submit(msg)

    def _process(self, msg) -> None:
        frame = self.sensors.frame(msg, self.config.max_image_pixels)  # None: unusable
        if frame is None:
            return
        if not self.context.ok():
            # Shutting down: a keyframe added now would be saved but never announced.
            self.counts["frames_dropped_at_shutdown"] += 1
            return
        result, reason = self.map_session.process(frame)  # search + add under the map lock
        if result is None:
            if reason is not None:  # None: no map open (deactivating)
                self.counts[f"gate.{reason}"] += 1
            return
        self.counts["keyframes"] += 1
        self.encode_ms.add(result.encode_ms)
        self.search_ms.add(result.search_ms)
        kf = result.keyframe
        try:
            self.keyframe_pub.publish(keyframe_to_msg(kf, self.config.model, with_image=False))
            self.candidates_pub.publish(
                candidates_to_msg(msg.header, kf, result.candidates, self.config.model)
            )
        except Exception:
            if self.context.ok():
                raise
            # SIGINT between the map add and here: the keyframe is saved; a re-ranker reads it
            # from the map when it first becomes a candidate.
            self.counts["keyframes_unannounced_at_shutdown"] += 1

    # -- map persistence: MapSession does the work, these translate ROS events ----------------
    def _save_on_exit(self) -> None:
        # print, not the logger: on SIGINT the ROS context may already be gone.
        try:
            saved = self.map_session.save_on_exit()
        except Exception as exc:
            print(f"[{self.get_name()}] map NOT saved: {type(exc).__name__}: {exc}", flush=True)
            return
        if saved is not None:
            path, n, seconds = saved
            print(f"[{self.get_name()}] map saved to {path}: {n} keyframes ({seconds:.2f} s)", flush=True)

    def _on_save_timer(self) -> None:
        try:
            saved = self.map_session.save_if_changed()
            if saved is not None:
                path, n, seconds = saved
                self.get_logger().debug(f"map saved to {path}: {n} keyframes ({seconds:.2f} s)")
                self._publish_map_info("saved")
        except Exception as exc:
            self.get_logger().error(f"periodic map save failed: {type(exc).__name__}: {exc}")

    def _publish_map_info(self, event: str) -> None:
        info = self.map_session.info(event)
        if info is None:
            return
        msg = map_info_to_msg(info)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.map_info_pub.publish(msg)

    # -- services ----------------------------------------------------------------------------------
    def _srv_save(self, request, response):
        try:
            response.path, response.num_keyframes, response.seconds = self.map_session.save(request.path)
            response.success = True
            response.message = f"saved {response.num_keyframes} keyframes to {response.path}"
            self._publish_map_info("saved")
        except Exception as exc:
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        self.get_logger().info(f"save_map: {response.message}")
        return response

    def _srv_load(self, request, response):
        try:
            path, response.num_keyframes, response.next_id = self.map_session.load(request.path)
            self._publish_map_info("loaded")
            response.success = True
            response.message = f"loaded {response.num_keyframes} keyframes from {path}"
        except Exception as exc:
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        self.get_logger().info(f"load_map: {response.message}")
        return response

    def _srv_reset(self, request, response):
        reset = self.map_session.reset()
        if reset is None:
            response.success, response.message = False, "the node is not active"
            return response
        removed, next_id = reset
        self._publish_map_info("reset")
        response.success = True
        response.message = f"map reset ({removed} keyframes removed; next id {next_id})"
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
        problems = (
            "bad_image.",
            "bad_depth.",
            "bad_odometry",
            "gate.",
            "depth_size_mismatch",
            "frames_dropped_at",
        )
        values.update(sorted((k, v) for k, v in self.counts.items() if k.startswith(problems)))
        values.update(callback_errors(self.counts))
        values.update(self.encode_ms.summary("encode_ms"))
        values.update(self.search_ms.summary("search_ms"))
        values.update(self.map_session.diagnostics())
        save_failures = self.map_session.counts["map_save_failures"]
        new_drops, self._last_diag_dropped = dropped - self._last_diag_dropped, dropped
        if not self.active:
            return WARN, "inactive: not processing images", values
        if new_drops:
            return WARN, f"dropped {new_drops} frames since the last report (slower than the camera)", values
        if save_failures:
            return WARN, f"{save_failures} map saves failed", values
        size = len(stage.map) if stage is not None else 0
        return OK, f"{self.counts['keyframes']} keyframes, map {size}", values


def main(args=None) -> None:
    from .spin import run_nodes

    run_nodes([DescriptorNode], args)


if __name__ == "__main__":
    main()
