"""A descriptor node's map across activations: open, add keyframes, save, load, reset, close.

ROS-free: the descriptor node turns its activation, services, save timer and shutdown into
these calls and publishes ``info()`` as ``vpr_ros/MapInfo``. The session keeps the
``DescriptorStage`` of the current activation, whose ``map`` is the live ``KeyframeMap``,
plus the ``MapStore`` and ``PayloadWriter`` of the directory it works in (``map_path``; a
load moves it).

Two locks: ``lock`` (the map lock) covers map changes (a frame's search + add, reset, load)
and snapshots; the save lock keeps saves (timer, service, shutdown) one at a time. Writing a
snapshot happens outside the map lock, so frames wait only while the map is copied.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .payloads import PayloadWriter
from .store import POINTER, MapStore, check_save_target, load_map, open_map


@dataclass
class SessionInfo:
    """What ``vpr_ros/MapInfo`` announces, field for field. ``session`` changes on every open,
    load and reset: other nodes then forget keyframes, whose ids may now name other images."""

    session: str
    map_id: str
    path: str
    model: str
    descriptor_dim: int
    index_factory: str
    num_keyframes: int
    next_id: int
    localization_only: bool
    event: str


class SavedMap(NamedTuple):
    """What a save wrote: the directory, its snapshot's keyframe count, the seconds it took."""

    path: str
    num_keyframes: int
    seconds: float


class MapSession:
    """``log``: anything with ``warning`` and ``error`` (a ``logging.Logger``, an rclpy logger).

    ``counts`` holds ``map_saves``, ``map_save_failures`` and ``map_payload_errors`` over every
    activation; ``version`` bumps on every change and a save to ``map_path`` records the
    version it wrote in ``saved_version``.
    """

    def __init__(self, map_path: str = "", log=None):
        self.map_path = map_path
        self.log = log or logging.getLogger(__name__)
        self.stage = None  # the DescriptorStage while a map is open
        self.config = None  # its PipelineConfig (kept after close, as the node keeps it)
        self.store: MapStore | None = None  # None: the map lives in memory only
        self.payloads: PayloadWriter | None = None  # writes keyframe folders into the store
        self.lock = threading.Lock()
        self._save_lock = threading.Lock()
        self.version = 0
        self.saved_version = 0
        self.session = ""
        self.last_save: dict = {}  # time, seconds, keyframes, next_id, session of the last save
        self.counts: Counter = Counter()
        self._copy_map_id = ""  # the map_id of copies of a map kept in memory only

    # -- opening and closing ---------------------------------------------------------------------
    def open(self, stage) -> str:
        """Give ``stage`` the map saved at ``map_path``, or a new one there (an empty map_path
        keeps the stage's own map, in memory only); returns what was opened, for a log line.

        Raises MapError for a damaged or foreign map: never start over it and overwrite it.
        """
        config = stage.config
        store, info = None, None
        if self.map_path:
            stage.map, store, info = open_map(
                self.map_path,
                config.model,
                stage.encoder.descriptor_dim,
                config.index_factory,
                config.map_device,
                create=not config.localization_only,  # map.json exists before any keyframe folder
            )
            if info is not None and info.index_factory != config.index_factory:
                self.log.warning(
                    f"saved map uses index '{info.index_factory}', not '{config.index_factory}': "
                    "keeping the saved index"
                )
        with self.lock:
            self.stage, self.config, self.store = stage, config, store
            self.payloads = self._payload_writer(store)
            self.version = self.saved_version = 0
            self.session = uuid.uuid4().hex
            self._copy_map_id = uuid.uuid4().hex
        if info is not None:
            return f"map {self.map_path}: {len(stage.map)} keyframes loaded, next id {stage.map.next_id}"
        return f"new map at {self.map_path}" if self.map_path else "map in memory only"

    def close(self) -> None:
        """Finish the queued keyframe folders and drop the stage, its model and its map. Save
        first (``save_on_exit``): what is not saved is gone."""
        with self.lock:
            self.stage, self.store = None, None
            self._close_payloads()

    def _payload_writer(self, store: MapStore | None) -> PayloadWriter | None:
        if store is None or self.config.localization_only:
            return None

        def failed(kf_id, exc):
            self.counts["map_payload_errors"] += 1
            self.log.error(f"could not store keyframe {kf_id} in {store.root}: {exc}")

        return PayloadWriter(store, on_error=failed)

    def _close_payloads(self) -> None:
        if self.payloads is not None:
            self.payloads.close()
            self.payloads = None

    # -- keyframes -------------------------------------------------------------------------------
    def process(self, frame):
        """Run ``stage.process(frame)`` under the map lock: (result, gate reason), (None, None)
        when no map is open. A keyframe that joins the map (not in localisation mode) bumps
        the version and has its folder queued for writing."""
        with self.lock:
            stage = self.stage
            if stage is None:
                return None, None
            result, reason = stage.process(frame)
            if result is not None and not self.config.localization_only:
                self.version += 1
                if self.payloads is not None:
                    # Queued before any snapshot can name this keyframe (snapshots take the lock);
                    # a save waits for the queue before it commits.
                    self.payloads.submit(result.keyframe)
        return result, reason

    # -- saving ----------------------------------------------------------------------------------
    def save(self, path: str = "") -> SavedMap:
        """Save the map (to ``path``, default map_path); returns (directory, keyframes, seconds)
        of the snapshot written, which ``info("saved")`` then announces.

        To another directory it writes a complete copy and the session stays in its own. That
        directory must be given as an absolute path and be new, empty, or an earlier copy of
        this map (``store.check_save_target``); anything else raises MapError."""
        with self._save_lock:
            t0 = time.monotonic()
            with self.lock:
                if self.stage is None:
                    raise RuntimeError("the node is not active (no map loaded)")
                snap = self.stage.map.snapshot()
                version, store, payloads, session = self.version, self.store, self.payloads, self.session
                map_id = store.map_id if store is not None else self._copy_map_id
            own = store is not None and (not path or _same_directory(path, store.root))
            try:
                if own:
                    target = store
                elif path:
                    target = MapStore(check_save_target(path, map_id), self.config.model, map_id=map_id)
                else:
                    raise RuntimeError("no path given and map_path is empty")
                if payloads is not None:
                    payloads.flush()  # every keyframe the snapshot names has its data on disk
                target.save(snap, payload_source=None if own or store is None else store.root)
            except Exception:
                self.counts["map_save_failures"] += 1
                raise
            seconds = time.monotonic() - t0
            if own:
                self.saved_version = version
            self.counts["map_saves"] += 1
            self.last_save = {
                "time": time.monotonic(),
                "seconds": seconds,
                "keyframes": snap.num_keyframes,
                "next_id": snap.next_id,
                "session": session,
            }
            return SavedMap(str(target.root), snap.num_keyframes, seconds)

    def save_if_changed(self) -> SavedMap | None:
        """The periodic save: None when nothing changed since the last save (or localisation)."""
        if self.config is None or self.config.localization_only or self.version == self.saved_version:
            return None
        return self.save()

    def save_on_exit(self) -> SavedMap | None:
        """At deactivation and shutdown: None when there is nothing to save (no directory,
        localisation, or the directory already holds this version); raises when saving fails."""
        store = self.store
        if store is None or self.stage is None or self.config.localization_only:
            return None
        if self.version == self.saved_version and (store.root / POINTER).is_file():
            return None
        return self.save()

    # -- replacing the map -----------------------------------------------------------------------
    def load(self, path: str = "") -> tuple[str, int, int]:
        """Replace the map with the one saved at ``path`` (default map_path), then work in and
        save to ``path``; returns (path, keyframes, next id). Keyframes not yet saved are
        dropped. Everything is read and validated before anything changes: a map that cannot
        be used raises and the current map, store, keyframe writer and session stay as they were."""
        if self.stage is None:
            raise RuntimeError("the node is not active")
        path = path or self.map_path
        if not path:
            raise RuntimeError("no path given and map_path is empty")
        dim = self.stage.encoder.descriptor_dim
        kmap, info = load_map(path, self.config.model, dim, device=self.config.map_device)
        store = MapStore(path, self.config.model, map_id=info.map_id)
        writer = self._payload_writer(store)  # idle until the swap below
        with self.lock:
            if self.stage is None:  # closed meanwhile
                if writer is not None:
                    writer.close()
                raise RuntimeError("the node is not active")
            old_store = self.store
            self._close_payloads()  # finish writing the old map's keyframes first
            busy = old_store.writing() if old_store and _same_directory(path, old_store.root) else set()
            try:
                store.discard_unsaved_payloads(info.next_id, keep=busy)
            except OSError as exc:  # leftovers stay on disk; the next open removes them
                self.log.warning(f"could not remove unsaved keyframe folders in {path}: {exc}")
            self.stage.map, self.store, self.payloads = kmap, store, writer
            self.stage.gate.reset()
            self.version = self.saved_version = 0
            self.map_path = path
            self.session = uuid.uuid4().hex
        return path, len(kmap), kmap.next_id

    def reset(self) -> tuple[int, int] | None:
        """Empty the map (ids keep counting) under a new map_id, so the next save replaces the
        map on disk; returns (keyframes removed, next id), None when no map is open."""
        with self.lock:
            if self.stage is None:
                return None
            removed = len(self.stage.map)
            self.stage.map.clear()
            self.stage.gate.reset()
            if self.store is not None:
                self.store.map_id = uuid.uuid4().hex  # a new map from here on
            self._copy_map_id = uuid.uuid4().hex
            self.version += 1
            self.session = uuid.uuid4().hex
            return removed, self.stage.map.next_id

    # -- reporting -------------------------------------------------------------------------------
    def info(self, event: str) -> SessionInfo | None:
        """The map as announced on vpr/map_info, None when no map is open. For ``"saved"`` the
        counts are those of the snapshot the last save wrote (keyframes keep arriving while a
        save runs), unless the map was replaced since."""
        with self.lock:
            stage, store = self.stage, self.store
            if stage is None:
                return None
            num_keyframes, next_id = len(stage.map), stage.map.next_id
            if event == "saved" and self.last_save.get("session") == self.session:
                num_keyframes, next_id = self.last_save["keyframes"], self.last_save["next_id"]
            return SessionInfo(
                session=self.session,
                map_id=store.map_id if store is not None else "",
                path=str(store.root.resolve()) if store is not None else "",
                model=self.config.model,
                descriptor_dim=stage.map.dim,
                index_factory=stage.map.index_factory,
                num_keyframes=num_keyframes,
                next_id=next_id,
                localization_only=self.config.localization_only,
                event=event,
            )

    def diagnostics(self) -> dict:
        """The ``map_*`` diagnostics values (docs/operations.md)."""
        stage, payloads = self.stage, self.payloads
        values = {}
        if stage is not None:
            values["map_keyframes"] = len(stage.map)
            values["map_next_id"] = stage.map.next_id
        values["map_path"] = self.map_path
        values["map_saves"] = self.counts["map_saves"]
        values["map_payload_queue"] = payloads.pending if payloads is not None else 0
        values["map_payload_errors"] = self.counts["map_payload_errors"]
        values["map_save_failures"] = self.counts["map_save_failures"]
        if self.last_save:
            values["map_last_save_s"] = self.last_save["seconds"]
            values["map_seconds_since_save"] = time.monotonic() - self.last_save["time"]
        return values


def _same_directory(path: str | Path, root: Path) -> bool:
    return os.path.realpath(path) == os.path.realpath(root)
