"""Map snapshots on disk: versioned ``map.json``, validated loads, crash-safe saves.

Saving never touches the current snapshot. The new one is written under a temporary name,
every file and directory is fsynced, it is renamed into place, and only then is ``map.json``
replaced (write ``map.json.tmp``, fsync, ``os.replace``, fsync the directory). A crash at any
moment leaves ``map.json`` naming a complete snapshot, the old one or the new one. After a
commit the older snapshots and keyframe folders the map no longer names are removed;
temporary keyframe folders only on the next open or load (a writer may be filling one).

Loading trusts nothing: ``map.json`` must be a regular file whose every field has the right
type and range, the four snapshot files must match its sha256, the index must be an
inner-product IDMap2 whose ids are exactly the records', and no part of the map may be a
symlink. A directory that holds keyframe data but no usable ``map.json`` is refused, never
started over. Deletions only touch names this module writes and never follow a symlink.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..types import Keyframe
from . import payloads
from .errors import MapError, MapMismatchError, check_float, check_int, check_str, short
from .files import (
    fsync_path,
    is_real_dir,
    load_npy,
    parse_json,
    read_regular,
    remove_tree,
    sha256,
    write_bytes,
    write_npy,
)
from .keyframe_map import KeyframeMap, KeyframeRecord, MapSnapshot
from .payloads import PAYLOAD_DIR, PAYLOAD_RE

FORMAT = "vpr_ros_map"
FORMAT_VERSION = 1
POINTER = "map.json"
SNAPSHOT_FILES = ("index.faiss", "keyframes.json", "pending.npy", "pending_ids.npy")
SNAPSHOT_RE = re.compile(r"snapshot-(\d{6,18})-[0-9a-f]{6}")
_TMP_SNAPSHOT_RE = re.compile(r"\.tmp-snapshot-\d{6,18}-[0-9a-f]{6}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
MAX_DIM = 1 << 16
_POINTER_LIMIT = 1 << 20


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
    files: dict = field(default_factory=dict)  # snapshot file name -> sha256


# -- reading ---------------------------------------------------------------------------------------
def read_info(path: str | Path) -> MapInfo | None:
    """The map.json of a saved map, None when ``path`` has no map.json; MapError when it is
    not a regular file (a directory, a symlink) or any field is missing or out of range."""
    root = Path(path)
    pointer = root / POINTER
    if not os.path.lexists(pointer):
        return None
    if pointer.is_symlink():
        raise MapError(f"{pointer} is a symlink; a map's {POINTER} must be a regular file (copy it in place)")
    try:
        data = parse_json(read_regular(pointer, _POINTER_LIMIT))
    except (OSError, ValueError) as exc:
        raise MapError(f"{pointer}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MapError(f"{pointer}: not a vpr_ros map file")
    version = data.get("format_version")
    if type(version) is not int or version > FORMAT_VERSION:
        raise MapError(
            f"{pointer}: map format version {short(version)}; this vpr_ros reads version {FORMAT_VERSION} "
            "(update vpr_ros, or start a new map)"
        )
    try:
        info = MapInfo(
            path=str(root),
            map_id=check_str(data.get("map_id"), "map_id", 128),
            model=check_str(data.get("model"), "model", 256),
            descriptor_dim=check_int(data.get("descriptor_dim"), "descriptor_dim", 1, MAX_DIM + 1),
            index_factory=check_str(data.get("index_factory"), "index_factory", 256),
            num_keyframes=check_int(data.get("num_keyframes"), "num_keyframes"),
            next_id=check_int(data.get("next_id"), "next_id"),
            saved_at=check_float(data.get("saved_at"), "saved_at"),
            snapshot=check_str(data.get("snapshot"), "snapshot", 64),
            format_version=check_int(version, "format_version", 1),
            files=data.get("files"),
        )
        if not info.map_id or not info.index_factory:
            raise ValueError("map_id and index_factory must not be empty")
        if not SNAPSHOT_RE.fullmatch(info.snapshot):
            raise ValueError(f"snapshot {short(info.snapshot)} is not a snapshot name of this directory")
        if not isinstance(info.files, dict) or set(info.files) != set(SNAPSHOT_FILES):
            raise ValueError(f"files must give the sha256 of {', '.join(SNAPSHOT_FILES)}")
        if not all(isinstance(v, str) and _SHA_RE.fullmatch(v) for v in info.files.values()):
            raise ValueError("files holds a value that is not a sha256")
    except ValueError as exc:
        raise MapError(f"{pointer}: missing or invalid field: {exc}") from None
    return info


def map_data(root: Path) -> str | None:
    """What in ``root`` is worth keeping (keyframe folders, a snapshot that holds keyframes,
    a non-plain keyframes/), None when there is nothing. Leftovers of a crash before the
    first commit (temporary folders, an empty first snapshot) are not map data."""
    if not root.is_dir():
        return None
    kf_dir = root / PAYLOAD_DIR
    if os.path.lexists(kf_dir):
        if not is_real_dir(kf_dir):
            return f"{PAYLOAD_DIR}/ that is not a plain directory"
        if any(PAYLOAD_RE.fullmatch(name) for name in os.listdir(kf_dir)):
            return f"keyframe folders in {PAYLOAD_DIR}/"
    for name in sorted(os.listdir(root)):
        if SNAPSHOT_RE.fullmatch(name):
            try:  # '{"keyframes": []}': anything longer holds keyframes (or is not ours)
                doc = parse_json(read_regular(root / name / "keyframes.json", 64))
            except (OSError, ValueError):
                return f"snapshot {name}"
            if doc != {"keyframes": []}:
                return f"snapshot {name}"
    return None


def _refuse_without_pointer(root: Path) -> None:
    what = map_data(root)
    if what is not None:
        raise MapError(
            f"{root} holds map data ({what}) but no {POINTER}: refusing to start a new map over it; "
            f"restore {POINTER} from a backup, or move the directory away to start a new map"
        )


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
    path: str | Path, model: str | None = None, descriptor_dim: int | None = None, device: str = "cpu"
) -> tuple[KeyframeMap, MapInfo]:
    """Load and validate a saved map, changing nothing on disk; raises MapError (one line,
    naming the file) and MapMismatchError for another model or descriptor size."""
    root = Path(path)
    info = read_info(root)
    if info is None:
        _refuse_without_pointer(root)
        raise MapError(f"no saved map at {root} (no {POINTER})")
    check_compatible(info, model, descriptor_dim)
    kf_dir = root / PAYLOAD_DIR
    if os.path.lexists(kf_dir) and not is_real_dir(kf_dir):
        raise MapError(f"{kf_dir} is not a plain directory (a symlink?); a map keeps its keyframes inside")
    snap_dir = root / info.snapshot
    if not os.path.lexists(snap_dir):
        raise MapError(f"{root / POINTER} names snapshot '{info.snapshot}', which does not exist")
    if not is_real_dir(snap_dir):
        raise MapError(f"snapshot {snap_dir} is not a plain directory (a symlink?)")
    for name in SNAPSHOT_FILES:
        file = snap_dir / name
        if not os.path.lexists(file):
            raise MapError(f"map file {file} is missing")
        if file.is_symlink() or not file.is_file():
            raise MapError(f"map file {file} is not a regular file")
        if sha256(file) != info.files[name]:
            raise MapError(f"map file {file} is corrupt (sha256 differs from {POINTER})")
    snap = MapSnapshot(
        dim=info.descriptor_dim,
        index_factory=info.index_factory,
        next_id=info.next_id,
        index_bytes=np.fromfile(snap_dir / "index.faiss", dtype=np.uint8),
        records=_read_records(snap_dir / "keyframes.json"),
        pending_ids=_read_array(snap_dir / "pending_ids.npy"),
        pending=_read_array(snap_dir / "pending.npy"),
    )
    if snap.num_keyframes != info.num_keyframes:
        raise MapError(
            f"{root / POINTER} says {info.num_keyframes} keyframes, {snap_dir / 'keyframes.json'} "
            f"holds {snap.num_keyframes}"
        )
    if snap.records and max(r.id for r in snap.records) >= info.next_id:
        raise MapError(
            f"{root / POINTER}: next_id {info.next_id} is not above keyframe id "
            f"{max(r.id for r in snap.records)} of {snap_dir / 'keyframes.json'}"
        )
    try:
        kmap = KeyframeMap.restore(snap, device=device)
    except Exception as exc:  # files that do not agree, an index faiss cannot read
        raise MapError(f"map snapshot {snap_dir} is inconsistent: {exc}") from None
    return kmap, info


def _read_records(file: Path) -> list[KeyframeRecord]:
    try:
        doc = parse_json(read_regular(file, 1 << 31))
        if not isinstance(doc, dict) or not isinstance(doc.get("keyframes"), list):
            raise ValueError("no 'keyframes' list")
        return [KeyframeRecord.from_dict(d) for d in doc["keyframes"]]
    except (OSError, ValueError) as exc:
        raise MapError(f"map file {file}: {exc}") from None


def _read_array(file: Path) -> np.ndarray:
    try:
        return load_npy(file)
    except (OSError, ValueError) as exc:
        raise MapError(f"map file {file}: unreadable ({exc})") from None


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
        self._writing: set[str] = set()  # temporary keyframe folders being written now

    def write_payload(self, kf: Keyframe) -> None:
        """Store what re-rankers need about a new keyframe, durably (``payloads``)."""
        tmp = payloads.temporary_path(self.root, kf.id)
        with self._lock:
            self._writing.add(tmp.name)
        try:
            payloads.write_payload(self.root, kf, tmp)
        finally:
            with self._lock:
                self._writing.discard(tmp.name)
        with self._lock:
            self._renamed = True

    def writing(self) -> set[str]:
        """Names of the temporary keyframe folders being written right now."""
        with self._lock:
            return set(self._writing)

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

        names = os.listdir(self.root)
        sequence = 1 + max([int(m.group(1)) for n in names if (m := SNAPSHOT_RE.fullmatch(n))] or [0])
        name = f"snapshot-{sequence:06d}-{uuid.uuid4().hex[:6]}"
        tmp = self.root / f".tmp-{name}"
        tmp.mkdir()
        records = json.dumps({"keyframes": [r.to_dict() for r in snap.records]}, allow_nan=False)
        files = {
            "index.faiss": write_bytes(tmp / "index.faiss", snap.index_bytes),
            "keyframes.json": write_bytes(tmp / "keyframes.json", records.encode()),
            "pending.npy": write_npy(tmp / "pending.npy", snap.pending),
            "pending_ids.npy": write_npy(tmp / "pending_ids.npy", snap.pending_ids),
        }
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
            files=files,
        )
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **_info_fields(info), "files": files}
        pointer_tmp = self.root / f"{POINTER}.tmp"
        remove_tree(pointer_tmp)  # a leftover (or a planted symlink) is never written through
        write_bytes(pointer_tmp, json.dumps(doc, indent=1).encode())
        os.replace(pointer_tmp, self.root / POINTER)  # the commit point
        fsync_path(self.root)

        self._remove_stale(keep=name, records={r.id for r in snap.records}, next_id=snap.next_id)
        self.last_save_seconds = time.monotonic() - t0
        return info

    def _remove_stale(self, keep: str, records: set[int], next_id: int) -> None:
        """After a commit: older and temporary snapshots, keyframes no snapshot names; only
        names this module writes, and a symlink loses the link only (``remove_tree``)."""
        for name in os.listdir(self.root):
            if name != keep and (SNAPSHOT_RE.fullmatch(name) or _TMP_SNAPSHOT_RE.fullmatch(name)):
                remove_tree(self.root / name)
        payloads.remove_unnamed_payloads(self.root, records, next_id)

    def discard_unsaved_payloads(self, next_id: int, keep: set[str] = frozenset()) -> int:
        """On open and load: drop keyframe folders the saved map does not reach (``payloads``)."""
        return payloads.discard_unsaved_payloads(self.root, next_id, keep)


def check_save_target(path: str, map_id: str | None) -> Path:
    """Where a save to another directory may write: an absolute path without '..' that does
    not exist yet (it is created), an empty directory, or a copy of this same map (``map_id``).
    Anything else raises MapError: a save never mixes maps or deletes files it did not write."""
    if not os.path.isabs(path):
        raise MapError(f"save path '{path}' is not absolute: give the full path of a new or empty directory")
    if ".." in Path(path).parts:
        raise MapError(f"save path '{path}' contains '..': give the plain path of a new or empty directory")
    root = Path(os.path.normpath(path))
    if not os.path.lexists(root):
        return root
    if root.is_symlink() or not root.is_dir():
        raise MapError(f"save path {root} exists and is not a plain directory")
    if not os.listdir(root):
        return root
    info = read_info(root)
    if info is None:
        raise MapError(f"save path {root} is not empty and holds no vpr_ros map: choose a new or empty one")
    if info.map_id != map_id:
        raise MapError(
            f"save path {root} holds another map (map_id {info.map_id}): choose a new or empty directory"
        )
    return root


def open_map(
    path: str | Path,
    model: str,
    descriptor_dim: int,
    index_factory: str = "Flat",
    device: str = "auto",
    create: bool = True,
) -> tuple[KeyframeMap, MapStore, MapInfo | None]:
    """The map saved at ``path`` (validated) or a new empty one, plus a store that saves there.

    Raises MapError when ``path`` holds a map that cannot be used, or keyframe data without a
    usable map.json: a node must not quietly start an empty map over a damaged or foreign one
    and overwrite it at the next save. A new map is saved at once (``create``), so that no
    keyframe folder is ever written into a directory without a map.json.
    """
    root = Path(path)
    info = read_info(root)
    if info is None:
        _refuse_without_pointer(root)
        kmap, store = KeyframeMap(descriptor_dim, index_factory, device=device), MapStore(root, model)
        store.discard_unsaved_payloads(0)
        if create:
            store.save(kmap.snapshot())
        return kmap, store, None
    kmap, info = load_map(root, model, descriptor_dim, device=device)
    store = MapStore(root, model, map_id=info.map_id)
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
