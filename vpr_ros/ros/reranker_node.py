"""Re-ranker node: verifies each keyframe's retrieval candidates, publishes vpr/verified.

A lifecycle node: activate builds the re-ranker (loading its model, if it has one) and starts
listening; deactivate frees it. It brings itself up unless ``autostart`` is false.

Candidates from a map saved earlier (before a restart, or loaded with vpr/load_map) are not
in memory: their images, intrinsics and model features are read from the map directory that
the descriptor node announces on vpr/map_info, once, when they are first needed. When the
descriptor node's map session changes (reset, reload, restart) everything remembered about
keyframes is dropped, because ids may then refer to other images.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict

import cv2
import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ..debug_image import draw_pair, find_matches
from ..image_conversion import BadImageError
from ..map import read_payload
from ..msg import LoopCandidates, LoopClosureArray, MapInfo
from ..pipeline import VerificationStage
from ..rerank import reranker_parameters
from ..runtime_stats import LatencyWindow
from .conversions import (
    candidates_from_msg,
    keyframe_from_msg,
    ns_to_stamp,
    rgb_to_image_msg,
    verification_to_msg,
)
from .diagnostics import OK, WARN, NodeDiagnostics
from .guard import callback_errors, guarded
from .managed import SUCCESS, ManagedNode, free_accelerator_memory
from .params import declare_pipeline_parameters, read_pipeline_config
from .qos import LATCHED
from .trust import SenderCheck
from .worker import BoundedWorker

# The generic ones; parameter_names() adds every registered re-ranker's own, so that no value
# of a params file that the offline tools use is ignored here.
PARAMETERS = [
    "reranker",
    "max_image_pixels",  # query images arrive from the network: a size limit before decoding
    "feature_ram_budget_mb",
    "feature_fp16",
    "feature_spill_dir",
    "device",
    "model",  # with weights: the checkpoint the pair classifier shares with model:=pairvpr
    "weights",
    "queue_size",
]


def parameter_names() -> list[str]:
    """PARAMETERS plus the parameters of every re-ranker registered by now."""
    return PARAMETERS + list(reranker_parameters())


# Debug pictures need the match keyframe's image; recent ones are kept compressed in RAM.
DEBUG_IMAGE_CACHE_BYTES = 64 * 2**20


class RerankerNode(ManagedNode):
    """Lifecycle node: activate builds the re-ranker (and its model), deactivate frees it."""

    def __init__(self, **kwargs):
        self.worker = self.stage = None  # destroy_node may run after a failed constructor
        self.active = False
        super().__init__("reranker_node", **kwargs)
        self.parameter_names = parameter_names()
        declare_pipeline_parameters(self, self.parameter_names)
        self.stage: VerificationStage | None = None
        self.worker: BoundedWorker | None = None
        self.counts: Counter = Counter()
        self.rerank_ms = LatencyWindow()
        self._active_subs: list = []
        self._publishers_made = False
        # Guards the stage and what it knows, so a map change never mixes with a query.
        self._lock = threading.Lock()
        self._known: set[int] = set()  # keyframe ids the re-ranker has features for
        self._missing: set[int] = set()  # ids the saved map has no data for (asked once)
        self._session: str | None = None
        self._map_path = ""
        self._images = _ImageCache(DEBUG_IMAGE_CACHE_BYTES)
        self._last_diag_dropped = 0
        self.diagnostics = NodeDiagnostics(
            self, "re-ranker", self._diagnostics, self.get_parameter("diagnostics_period").value
        )
        self.autostart()

    # -- lifecycle -----------------------------------------------------------------------------
    def _configure(self) -> None:
        self.config = read_pipeline_config(self, self.parameter_names)
        self.debug_image = bool(self.get_parameter("publish_debug_image").value)
        if not self._publishers_made:
            self.pub = self.create_lifecycle_publisher(LoopClosureArray, "vpr/verified", 10)
            self.debug_pub = self.create_lifecycle_publisher(Image, "vpr/debug_image", 2)
            self._publishers_made = True

    def on_activate(self, state):
        result = self.run_transition("activate", self._activate)
        if result != SUCCESS:
            return result
        return super().on_activate(state)

    def _activate(self) -> None:
        t0 = time.monotonic()
        stage = VerificationStage(self.config)  # loads the pair classifier for pairvpr
        with self._lock:
            self.stage = stage
            self._known.clear()
            self._missing.clear()
        # Every keyframe passes through here and a dropped one never becomes a loop target,
        # so this queue absorbs bursts (~0.6 MB per queued keyframe with its image).
        self.worker = BoundedWorker(
            self._process, max(self.config.queue_size, 50), self.get_logger(), "reranker"
        )
        descriptor = self.get_parameter("descriptor_node_name").value
        self._senders = {t: SenderCheck(self, t, descriptor) for t in ("vpr/candidates", "vpr/map_info")}
        self._active_subs = [
            self.create_subscription(
                LoopCandidates, "vpr/candidates", guarded(self, "candidates", self._on_candidates), 50
            ),
            self.create_subscription(
                MapInfo, "vpr/map_info", guarded(self, "map_info", self._on_map_info_msg), LATCHED
            ),
        ]
        self.active = True
        self.get_logger().info(f"re-ranker '{self.config.reranker}' ready ({time.monotonic() - t0:.1f} s)")

    def _deactivate(self) -> None:
        self.active = False
        for sub in self._active_subs:
            self.destroy_subscription(sub)
        self._active_subs = []
        self._stop_worker()
        with self._lock:
            self.stage = None
            self._known.clear()
        free_accelerator_memory()

    def destroy_node(self):
        self.active = False
        self._stop_worker()
        return super().destroy_node()

    # -- callbacks -----------------------------------------------------------------------------
    def _from_sender(self, topic: str, info) -> bool:
        if not self.get_parameter("check_senders").value or self._senders[topic].accepts(info):
            return True
        self._refuse("unknown_sender", f"a {topic} message from a publisher that is not its node")
        return False

    def _refuse(self, reason: str, detail: str) -> None:
        self.counts[f"refused.{reason}"] += 1
        self.get_logger().warning(f"refused {detail} ({reason})", throttle_duration_sec=10.0)

    # No default for info: rclpy passes MessageInfo only to callbacks that require it.
    def _on_candidates(self, msg: LoopCandidates, info) -> None:
        self.counts["queries_in"] += 1
        if not self._from_sender("vpr/candidates", info):
            return
        worker = self.worker
        if worker is not None:
            worker.submit(msg)

    def _on_map_info_msg(self, msg: MapInfo, info) -> None:
        if self._from_sender("vpr/map_info", info):
            self._on_map_info(msg)

    def _on_map_info(self, msg: MapInfo) -> None:
        with self._lock:
            self._map_path = msg.path
            if self._session is not None and msg.session != self._session and self.stage is not None:
                # Keyframe ids may now mean other images: forget every feature and start over.
                stale = self.worker.clear() if self.worker is not None else 0
                self.stage.reset()  # keeps a loaded model (Pair-VPR: 200 M parameters)
                self._known.clear()
                self._missing.clear()
                self._images.clear()
                self.counts["map_changes"] += 1
                self.counts["stale_queries_dropped"] += stale
                self.get_logger().info(
                    f"map {msg.event} ({msg.num_keyframes} keyframes): re-ranker state cleared"
                )
            self._session = msg.session

    # -- worker --------------------------------------------------------------------------------
    def _process(self, msg: LoopCandidates) -> None:
        try:
            query = keyframe_from_msg(msg.query, max_pixels=self.config.max_image_pixels)
        except BadImageError as err:
            self.counts[f"bad_query_image.{err.reason}"] += 1
            self.get_logger().warning(f"query keyframe {msg.query.id}: {err}", throttle_duration_sec=10.0)
            return
        candidates = candidates_from_msg(msg)
        with self._lock:
            stage = self.stage
            if stage is None:
                return
            if query.id in self._known:
                # Ids are never reused within a map session: another image under a known id
                # would overwrite the features every later verification against it uses.
                self._refuse("reused_keyframe_id", f"a second keyframe with id {query.id}")
                return
            self._load_from_map(stage, candidates)
            t0 = time.perf_counter()
            results = stage.process(query, candidates)
            self.rerank_ms.add((time.perf_counter() - t0) * 1e3)
            self._known.add(query.id)
        self.counts["queries"] += 1
        if self.debug_image and query.image is not None:
            self._images.put(query.id, query.image)
        out = LoopClosureArray()
        out.header = msg.header
        out.query_id = query.id
        out.closures = [verification_to_msg(query, v, msg.query.model, self.config.reranker) for v in results]
        self.pub.publish(out)
        if self.debug_image and results and self.debug_pub.get_subscription_count() > 0:
            self._publish_debug_image(query, results[0], stage)

    def _load_from_map(self, stage: VerificationStage, candidates) -> None:
        """Candidates from a saved map (before a restart, or a loaded map): read their data."""
        if not self._map_path:
            return
        for cand in candidates:
            if cand.id in self._known or cand.id in self._missing:
                continue
            try:
                kf = read_payload(self._map_path, cand.id)
            except Exception as exc:  # a damaged keyframe folder: that candidate fails, others go on
                self.get_logger().warn(f"keyframe {cand.id} in {self._map_path}: {exc}")
                kf = None
            if kf is None:
                self._missing.add(cand.id)
                self.counts["map_keyframes_missing"] += 1
                continue
            stage.reranker.add_keyframe(kf)
            self._known.add(cand.id)
            self.counts["map_keyframes_loaded"] += 1
            if self.debug_image and kf.image is not None:
                self._images.put(kf.id, kf.image)

    def _publish_debug_image(self, query, best, stage) -> None:
        match_image = self._images.get(best.candidate.id)
        if match_image is None and self._map_path:
            try:
                kf = read_payload(self._map_path, best.candidate.id)
            except Exception:  # a damaged keyframe folder: no picture, verification went on
                kf = None
            match_image = kf.image if kf is not None else None
        if match_image is None:
            self.counts["debug_image_no_match_image"] += 1
            return
        pts_q, pts_m, inliers = find_matches(query.image, match_image, stage.reranker)
        verdict = "PASS" if best.passed else "FAIL"
        caption = (
            f"{verdict} kf {query.id} -> {best.candidate.id}  sim {best.candidate.similarity:.3f}  "
            f"score {best.score:.1f}  {best.reason}"
        )
        canvas = draw_pair(query.image, match_image, pts_q, pts_m, inliers, caption[:120])
        header = Header(stamp=ns_to_stamp(query.stamp_ns), frame_id=query.frame_id)
        self.debug_pub.publish(rgb_to_image_msg(canvas, header))

    # -- diagnostics -------------------------------------------------------------------------------
    def _diagnostics(self):
        worker, stage = self.worker, self.stage
        dropped = self.worker_count("dropped")
        values = {
            "active": self.active,
            "reranker": self.config.reranker if hasattr(self, "config") else "",
            "queries_in": self.counts["queries_in"],
            "verified_subscribers": self.pub.get_subscription_count() if hasattr(self, "pub") else 0,
            "queries": self.counts["queries"],
            "queries_dropped": dropped,
            "queue_length": worker.pending if worker else 0,
            "worker_errors": self.worker_count("errors"),
            "known_keyframes": len(self._known),
        }
        for key in ("map_keyframes_loaded", "map_keyframes_missing", "map_changes", "stale_queries_dropped"):
            values[key] = self.counts[key]
        values.update(
            sorted((k, v) for k, v in self.counts.items() if k.startswith(("refused.", "bad_query_image.")))
        )
        values.update(callback_errors(self.counts))
        values.update(self.rerank_ms.summary("rerank_ms"))
        store = getattr(stage.reranker, "store", None) if stage is not None else None
        if store is not None:
            values["feature_store_ram_mb"] = store.ram_bytes / 2**20
            values["feature_store_spilled"] = store.num_spilled
        new_drops, self._last_diag_dropped = dropped - self._last_diag_dropped, dropped
        if not self.active:
            return WARN, "inactive: not verifying", values
        if new_drops:
            return WARN, f"dropped {new_drops} queries since the last report (verification too slow)", values
        return OK, f"{self.counts['queries']} queries verified", values


class _ImageCache:
    """Recent keyframe images for debug pictures, JPEG-compressed, bounded in bytes."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._items: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, kf_id: int, rgb: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            return
        data = buf.tobytes()
        with self._lock:
            if kf_id in self._items:
                self._bytes -= len(self._items.pop(kf_id))
            self._items[kf_id] = data
            self._bytes += len(data)
            while self._bytes > self.budget and len(self._items) > 1:
                self._bytes -= len(self._items.popitem(last=False)[1])

    def get(self, kf_id: int) -> np.ndarray | None:
        with self._lock:
            data = self._items.get(kf_id)
        if data is None:
            return None
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def main(args=None) -> None:
    from .spin import run_nodes

    run_nodes([RerankerNode], args)


if __name__ == "__main__":
    main()
