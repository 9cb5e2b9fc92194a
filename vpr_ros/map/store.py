"""Map snapshots on disk: versioned ``map.json``, validated loads, crash-safe saves.

Saving never touches the current snapshot. The new one is written under a temporary name,
every file and directory is fsynced, it is renamed into place, and only then is ``map.json``
replaced (write ``map.json.tmp``, fsync, ``os.replace``, fsync the directory). A crash at any
moment leaves ``map.json`` naming a complete snapshot, the old one or the new one. Leftovers
(temporary snapshots, keyframe folders newer than the saved map) are removed on the next
save or load.

Keyframe folders (``payloads``) are written once and never changed, so a save does not
rewrite them: it only fsyncs the folder that holds them before it commits.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..types import Keyframe
from . import payloads
from .errors import MapError, MapMismatchError
from .files import fsync_path, load_npy, sha256, write_bytes, write_npy
from .keyframe_map import KeyframeMap, KeyframeRecord, MapSnapshot
from .payloads import PAYLOAD_DIR

FORMAT = "vpr_ros_map"
FORMAT_VERSION = 1
POINTER = "map.json"
SNAPSHOT_FILES = ("index.faiss", "keyframes.json", "pending.npy", "pending_ids.npy")
_SNAPSHOT_RE = re.compile(r"^snapshot-(\d+)-[0-9a-f]+$")


@dataclass
class MapInfo:
    """What map.json says about a saved map."""

    path: str
    map_id: str
    model: str
    descriptor_dim: int
    index_factory: str
    num_keyframes: int
    next_id: int
    saved_at: float
    snapshot: str
    format_version: int = FORMAT_VERSION


# -- reading ---------------------------------------------------------------------------------------
def read_info(path: str | Path) -> MapInfo | None:
    """The map.json of a saved map, None when ``path`` holds no saved map."""
    root = Path(path)
    pointer = root / POINTER
    if not pointer.is_file():
        return None
    try:
        data = json.loads(pointer.read_text())
    except (OSError, ValueError) as exc:
        raise MapError(f"{pointer}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MapError(f"{pointer}: not a vpr_ros map file")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise MapError(
            f"{pointer}: map format version {version!r}; this vpr_ros reads version {FORMAT_VERSION} "
            "(update vpr_ros, or start a new map)"
        )
    try:
        return MapInfo(
            path=str(root),
            map_id=str(data["map_id"]),
            model=str(data["model"]),
            descriptor_dim=int(data["descriptor_dim"]),
            index_factory=str(data["index_factory"]),
            num_keyframes=int(data["num_keyframes"]),
            next_id=int(data["next_id"]),
            saved_at=float(data["saved_at"]),
            snapshot=str(data["snapshot"]),
            format_version=version,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MapError(f"{pointer}: missing or invalid field ({exc})") from None


def check_compatible(info: MapInfo, model: str | None, descriptor_dim: int | None) -> None:
    """Refuse a map made with another model or descriptor size, saying what to do."""
    problems = []
    if model is not None and info.model != model:
        problems.append(f"model '{info.model}' (this node runs '{model}')")
    if descriptor_dim is not None and info.descriptor_dim != descriptor_dim:
        problems.append(f"{info.descriptor_dim}-D descriptors (this model makes {descriptor_dim}-D)")
    if problems:
        raise MapMismatchError(
            f"map at {info.path} was built with {' and '.join(problems)}; descriptors of different "
            "models cannot be compared. Use the same model, or another map_path for a new map."
        )


def load_map(
    path: str | Path,
    model: str | None = None,
    descriptor_dim: int | None = None,
    device: str = "cpu",
    verify_checksums: bool = True,
) -> tuple[KeyframeMap, MapInfo]:
    """Load and validate a saved map; raises MapError (MapMismatchError for another model)."""
    root = Path(path)
    info = read_info(root)
    if info is None:
        raise MapError(f"no saved map at {root} (no {POINTER})")
    check_compatible(info, model, descriptor_dim)
    snap_dir = root / info.snapshot
    if not _SNAPSHOT_RE.match(info.snapshot) or not snap_dir.is_dir():
        raise MapError(f"{root / POINTER} names snapshot '{info.snapshot}', which does not exist")
    pointer = json.loads((root / POINTER).read_text())
    files = pointer.get("files", {})
    for name in SNAPSHOT_FILES:
        file = snap_dir / name
        if not file.is_file():
            raise MapError(f"map file {file} is missing")
        if verify_checksums and name in files and sha256(file) != files[name]:
            raise MapError(f"map file {file} is corrupt (sha256 differs from {POINTER})")
    try:
        records_doc = json.loads((snap_dir / "keyframes.json").read_text())
        records = [KeyframeRecord.from_dict(d) for d in records_doc["keyframes"]]
        snap = MapSnapshot(
            dim=info.descriptor_dim,
            index_factory=info.index_factory,
            next_id=info.next_id,
            index_bytes=np.fromfile(snap_dir / "index.faiss", dtype=np.uint8),
            records=records,
            pending_ids=load_npy(snap_dir / "pending_ids.npy").astype(np.int64),
            pending=load_npy(snap_dir / "pending.npy").astype(np.float32),
        )
        kmap = KeyframeMap.restore(snap, device=device)
    except MapError:
        raise
    except Exception as exc:  # any inconsistency in the files: say which map and why
        raise MapError(f"map at {root} is inconsistent: {type(exc).__name__}: {exc}") from None
    if len(kmap) != info.num_keyframes:
        raise MapError(
            f"map at {root}: {POINTER} says {info.num_keyframes} keyframes, files hold {len(kmap)}"
        )
    return kmap, info


# -- writing ---------------------------------------------------------------------------------------
class MapStore:
    """Writes one map directory: keyframe payloads as they arrive, snapshots on save.

    The caller serialises ``save`` calls and writes a keyframe's payload before taking any
    snapshot that contains the keyframe; payload writes may run beside a save.
    """

    def __init__(self, path: str | Path, model: str, map_id: str | None = None):
        self.root = Path(path)
        self.model = model
        self.map_id = map_id or uuid.uuid4().hex
        self.last_save_seconds = 0.0
        self._lock = threading.Lock()
        self._renamed = False  # keyframe folders renamed into place since the last save

    def write_payload(self, kf: Keyframe) -> None:
        """Store what re-rankers need about a new keyframe, durably (``payloads``)."""
        payloads.write_payload(self.root, kf)
        with self._lock:
            self._renamed = True

    def save(self, snap: MapSnapshot, payload_source: Path | None = None) -> MapInfo:
        """Write ``snap`` as the new current map, atomically (see the module docstring)."""
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        if payload_source is not None and Path(payload_source).resolve() != self.root.resolve():
            payloads.copy_payloads(Path(payload_source), self.root, [r.id for r in snap.records])
        with self._lock:
            renamed, self._renamed = self._renamed, False
        if renamed:  # makes the keyframe folders this snapshot names durable before it commits
            try:
                fsync_path(self.root / PAYLOAD_DIR)
            except BaseException:
                self._renamed = True
                raise

        sequence = 1 + max(
            [int(m.group(1)) for p in self.root.iterdir() if (m := _SNAPSHOT_RE.match(p.name))] or [0]
        )
        name = f"snapshot-{sequence:06d}-{uuid.uuid4().hex[:6]}"
        tmp = self.root / f".tmp-{name}"
        tmp.mkdir()
        files = {
            "index.faiss": write_bytes(tmp / "index.faiss", snap.index_bytes),
            "keyframes.json": write_bytes(
                tmp / "keyframes.json",
                json.dumps({"keyframes": [r.to_dict() for r in snap.records]}).encode(),
            ),
        }
        write_npy(tmp / "pending.npy", snap.pending)
        write_npy(tmp / "pending_ids.npy", snap.pending_ids)
        files["pending.npy"] = sha256(tmp / "pending.npy")
        files["pending_ids.npy"] = sha256(tmp / "pending_ids.npy")
        fsync_path(tmp)
        os.rename(tmp, self.root / name)
        fsync_path(self.root)

        info = MapInfo(
            path=str(self.root),
            map_id=self.map_id,
            model=self.model,
            descriptor_dim=snap.dim,
            index_factory=snap.index_factory,
            num_keyframes=snap.num_keyframes,
            next_id=snap.next_id,
            saved_at=time.time(),
            snapshot=name,
        )
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **_info_fields(info), "files": files}
        pointer_tmp = self.root / f"{POINTER}.tmp"
        write_bytes(pointer_tmp, json.dumps(doc, indent=1).encode())
        os.replace(pointer_tmp, self.root / POINTER)  # the commit point
        fsync_path(self.root)

        self._remove_stale(keep=name, records={r.id for r in snap.records}, next_id=snap.next_id)
        self.last_save_seconds = time.monotonic() - t0
        return info

    def _remove_stale(self, keep: str, records: set[int], next_id: int) -> None:
        """After a commit: older snapshots, temporary folders, keyframes no snapshot names."""
        for p in self.root.iterdir():
            if p.name == keep:
                continue
            if _SNAPSHOT_RE.match(p.name) or p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)
        payloads.remove_unnamed_payloads(self.root, records, next_id)

    def discard_unsaved_payloads(self, next_id: int) -> int:
        """On load: drop keyframe folders the saved map does not reach (``payloads``)."""
        return payloads.discard_unsaved_payloads(self.root, next_id)


def open_map(
    path: str | Path, model: str, descriptor_dim: int, index_factory: str = "Flat", device: str = "auto"
) -> tuple[KeyframeMap, MapStore, MapInfo | None]:
    """The map saved at ``path`` (validated) or a new empty one, plus a store that saves there.

    Raises MapError when ``path`` holds a map that cannot be used: a node must not quietly
    start an empty map over a damaged or foreign one and overwrite it at the next save.
    """
    info = read_info(path)
    if info is None:
        kmap, store = KeyframeMap(descriptor_dim, index_factory, device=device), MapStore(path, model)
        store.discard_unsaved_payloads(0)
        return kmap, store, None
    kmap, info = load_map(path, model, descriptor_dim, device=device)
    store = MapStore(path, model, map_id=info.map_id)
    store.discard_unsaved_payloads(info.next_id)
    return kmap, store, info


def _info_fields(info: MapInfo) -> dict:
    return {
        "map_id": info.map_id,
        "model": info.model,
        "descriptor_dim": info.descriptor_dim,
        "index_factory": info.index_factory,
        "num_keyframes": info.num_keyframes,
        "next_id": info.next_id,
        "saved_at": info.saved_at,
        "snapshot": info.snapshot,
    }
