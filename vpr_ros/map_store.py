"""The keyframe map on disk: versioned, validated, and crash-safe to save.

Layout of a map directory::

    map.json                 version file and pointer: format version, model, descriptor size,
                             index factory, counts, and which snapshot is current
    snapshot-000012-1a2b3c/  the current snapshot (written complete before map.json names it)
        index.faiss          FAISS index (IDMap2 over the index factory, inner product)
        keyframes.json       keyframe records: id, stamp, frame id, camera, optional 4x4 pose
        pending.npy          descriptors not yet in an untrained (IVF/PQ) index, with their ids
        pending_ids.npy
    keyframes/000000000042/  what re-rankers need about keyframe 42, written once when it is added:
        meta.json            stamp, frame id, camera, intrinsics, pose, which arrays exist
        image.png            the downscaled verification image (lossless)
        depth.npy            aligned depth in metres (when there was one)
        local.<name>.npy     model local features (memory-mappable)

No pickles anywhere: JSON, PNG, ``.npy`` read with ``allow_pickle=False``, and FAISS's own
index format.

Saving never touches the current snapshot. The new one is written under a temporary name,
every file and directory is fsynced, it is renamed into place, and only then is ``map.json``
replaced (write ``map.json.tmp``, fsync, ``os.replace``, fsync the directory). A crash at any
moment leaves ``map.json`` naming a complete snapshot, the old one or the new one. Leftovers
(temporary snapshots, keyframe folders newer than the saved map) are removed on the next
save or load.

Keyframe folders are written once (files fsynced as they are written, by ``PayloadWriter``
off the camera's thread) and never changed, so a save does not rewrite them: it only fsyncs
the folder that holds them before it commits. The map keeps re-ranker *inputs*
(image, intrinsics, depth, model local features) rather than one re-ranker's features, so a
saved map works with any re-ranker; features are recomputed on demand after a restart.
"""

from __future__ import annotations

import hashlib
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

from .keyframe_map import KeyframeMap, KeyframeRecord, MapSnapshot
from .types import Keyframe

FORMAT = "vpr_ros_map"
FORMAT_VERSION = 1
POINTER = "map.json"
PAYLOAD_DIR = "keyframes"
_SNAPSHOT_RE = re.compile(r"^snapshot-(\d+)-[0-9a-f]+$")
_PAYLOAD_RE = re.compile(r"^\d{12}$")


class MapError(RuntimeError):
    """A map directory that cannot be used (missing, corrupt, or from a newer vpr_ros)."""


class MapMismatchError(MapError):
    """A map made by another model or descriptor size than the one asked for."""


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


# -- small durable-write helpers ----------------------------------------------------------------
def _fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data, fsync: bool = True) -> str:
    """Write, optionally fsync, and return the sha256 of what was written."""
    view = memoryview(data).cast("B")
    with open(path, "wb") as f:
        f.write(view)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    return hashlib.sha256(view).hexdigest()


def _write_npy(path: Path, array: np.ndarray, fsync: bool = True) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def payload_name(kf_id: int) -> str:
    return f"{int(kf_id):012d}"


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
    for name in ("index.faiss", "keyframes.json", "pending.npy", "pending_ids.npy"):
        file = snap_dir / name
        if not file.is_file():
            raise MapError(f"map file {file} is missing")
        if verify_checksums and name in files and _sha256(file) != files[name]:
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
            pending_ids=_load_npy(snap_dir / "pending_ids.npy").astype(np.int64),
            pending=_load_npy(snap_dir / "pending.npy").astype(np.float32),
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


def read_payload(path: str | Path, kf_id: int) -> Keyframe | None:
    """A keyframe's re-ranking inputs from a map directory, None when it has none stored."""
    folder = Path(path) / PAYLOAD_DIR / payload_name(kf_id)
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        return None
    import cv2

    meta = json.loads(meta_file.read_text())
    image = None
    if meta.get("image"):
        bgr = cv2.imread(str(folder / "image.png"), cv2.IMREAD_COLOR)
        if bgr is None:
            raise MapError(f"{folder / 'image.png'} is unreadable")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    depth = _load_npy(folder / "depth.npy") if meta.get("depth") else None
    local = {
        name: _load_npy(folder / f"local.{name}.npy", mmap=True) for name in meta.get("local_features", [])
    }
    camera_matrix = meta.get("camera_matrix")
    pose = meta.get("pose")
    return Keyframe(
        id=int(meta["id"]),
        stamp=float(meta["stamp"]),
        descriptor=np.zeros(0, np.float32),  # the descriptor lives in the index
        image=image,
        camera_matrix=None if camera_matrix is None else np.asarray(camera_matrix, np.float64).reshape(3, 3),
        depth=depth,
        pose=None if pose is None else np.asarray(pose, np.float64).reshape(4, 4),
        frame_id=str(meta.get("frame_id", "")),
        camera=str(meta.get("camera", "")),
        local_features=local,
    )


def read_payload_pose(path: str | Path, kf_id: int) -> np.ndarray | None:
    """Only the stored 4x4 pose of a keyframe (cheap: reads meta.json alone)."""
    meta_file = Path(path) / PAYLOAD_DIR / payload_name(kf_id) / "meta.json"
    try:
        pose = json.loads(meta_file.read_text()).get("pose")
    except (OSError, ValueError):
        return None
    return None if pose is None else np.asarray(pose, np.float64).reshape(4, 4)


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

    # payloads -----------------------------------------------------------------------------
    def write_payload(self, kf: Keyframe) -> None:
        """Store what re-rankers need about a new keyframe, durably (its files are fsynced; the
        rename into place becomes durable with the next save, before that save commits)."""
        import cv2

        parent = self.root / PAYLOAD_DIR
        parent.mkdir(parents=True, exist_ok=True)
        final = parent / payload_name(kf.id)
        tmp = parent / f".tmp-{payload_name(kf.id)}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        meta = {
            "id": int(kf.id),
            "stamp": float(kf.stamp),
            "frame_id": kf.frame_id,
            "camera": kf.camera,
            "camera_matrix": None
            if kf.camera_matrix is None
            else [float(v) for v in np.ravel(kf.camera_matrix)],
            "pose": None if kf.pose is None else [float(v) for v in np.ravel(kf.pose)],
            "image": kf.image is not None,
            "depth": kf.depth is not None,
            "local_features": sorted(kf.local_features),
        }
        if kf.image is not None:
            ok, png = cv2.imencode(
                ".png", cv2.cvtColor(kf.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]
            )
            if not ok:
                raise MapError(f"cannot PNG-encode keyframe {kf.id}")
            _write_bytes(tmp / "image.png", png)
        if kf.depth is not None:
            _write_npy(tmp / "depth.npy", np.asarray(kf.depth, np.float32))
        for name, value in kf.local_features.items():
            _write_npy(tmp / f"local.{name}.npy", np.asarray(value))
        _write_bytes(tmp / "meta.json", json.dumps(meta).encode())
        _fsync_path(tmp)
        if final.exists():  # left over from a crash before the map that named it was saved
            shutil.rmtree(final)
        os.rename(tmp, final)
        with self._lock:
            self._renamed = True

    def _sync_folders(self, folders: list[Path]) -> None:
        for folder in folders:
            for file in folder.iterdir():
                _fsync_path(file)
            _fsync_path(folder)
        if folders:
            _fsync_path(self.root / PAYLOAD_DIR)

    def _copy_payloads_from(self, source: Path, ids: list[int]) -> None:
        """For a save to another directory: hard-link (else copy) every keyframe folder."""
        target = self.root / PAYLOAD_DIR
        target.mkdir(parents=True, exist_ok=True)
        copied = []
        for kf_id in ids:
            src = source / PAYLOAD_DIR / payload_name(kf_id)
            dst = target / payload_name(kf_id)
            if not src.is_dir() or dst.exists():
                continue
            tmp = target / f".tmp-{payload_name(kf_id)}-{uuid.uuid4().hex[:6]}"
            tmp.mkdir()
            for file in src.iterdir():
                try:
                    os.link(file, tmp / file.name)
                except OSError:  # another file system
                    shutil.copy2(file, tmp / file.name)
            os.rename(tmp, dst)
            copied.append(dst)
        self._sync_folders(copied)

    # snapshots ----------------------------------------------------------------------------
    def save(self, snap: MapSnapshot, payload_source: Path | None = None) -> MapInfo:
        """Write ``snap`` as the new current map, atomically (see the module docstring)."""
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        if payload_source is not None and Path(payload_source).resolve() != self.root.resolve():
            self._copy_payloads_from(Path(payload_source), [r.id for r in snap.records])
        with self._lock:
            renamed, self._renamed = self._renamed, False
        if renamed:  # makes the keyframe folders this snapshot names durable before it commits
            try:
                _fsync_path(self.root / PAYLOAD_DIR)
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
            "index.faiss": _write_bytes(tmp / "index.faiss", snap.index_bytes),
            "keyframes.json": _write_bytes(
                tmp / "keyframes.json",
                json.dumps({"keyframes": [r.to_dict() for r in snap.records]}).encode(),
            ),
        }
        _write_npy(tmp / "pending.npy", snap.pending)
        _write_npy(tmp / "pending_ids.npy", snap.pending_ids)
        files["pending.npy"] = _sha256(tmp / "pending.npy")
        files["pending_ids.npy"] = _sha256(tmp / "pending_ids.npy")
        _fsync_path(tmp)
        os.rename(tmp, self.root / name)
        _fsync_path(self.root)

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
        _write_bytes(pointer_tmp, json.dumps(doc, indent=1).encode())
        os.replace(pointer_tmp, self.root / POINTER)  # the commit point
        _fsync_path(self.root)

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
        payloads = self.root / PAYLOAD_DIR
        if payloads.is_dir():
            for p in payloads.iterdir():
                if p.name.startswith(".tmp-"):
                    shutil.rmtree(p, ignore_errors=True)
                # Folders at or past next_id belong to keyframes added after the snapshot.
                elif _PAYLOAD_RE.match(p.name) and int(p.name) < next_id and int(p.name) not in records:
                    shutil.rmtree(p, ignore_errors=True)

    def discard_unsaved_payloads(self, next_id: int) -> int:
        """On load: keyframe folders at or past the saved ``next_id`` were never part of a saved
        map (a crash after they were written); their ids will be given out again."""
        payloads = self.root / PAYLOAD_DIR
        removed = 0
        if payloads.is_dir():
            for p in payloads.iterdir():
                stale = p.name.startswith(".tmp-") or (_PAYLOAD_RE.match(p.name) and int(p.name) >= next_id)
                if stale:
                    shutil.rmtree(p, ignore_errors=True)
                    removed += 1
        return removed


class PayloadWriter:
    """Writes keyframe folders on a thread of its own, in order, so fsyncs (about 10 ms each on
    an SSD, three or more per keyframe) never stall the thread that encodes images.

    ``submit`` blocks only when ``max_pending`` keyframes are already waiting (disk slower than
    keyframes arrive): the caller slows down and its own bounded queue drops camera frames,
    but no keyframe of the map loses its data. ``flush`` waits until everything submitted is
    on disk; a save calls it before committing a snapshot that names those keyframes.
    """

    def __init__(self, store: MapStore, max_pending: int = 16, on_error=None):
        self.store = store
        self.max_pending = max_pending
        self.on_error = on_error
        self.errors = 0
        self.written = 0
        self._queue: list[Keyframe] = []
        self._busy = False
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="map_payloads", daemon=True)
        self._thread.start()

    def submit(self, kf: Keyframe) -> None:
        with self._cond:
            while len(self._queue) >= self.max_pending and not self._stop:
                self._cond.wait()
            self._queue.append(kf)
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """True when every submitted keyframe has been written (or has failed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    @property
    def pending(self) -> int:
        return len(self._queue) + int(self._busy)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue:
                    return
                kf = self._queue.pop(0)
                self._busy = True
                self._cond.notify_all()
            try:
                self.store.write_payload(kf)
                self.written += 1
            except Exception as exc:  # disk full, permissions: the map itself stays valid
                self.errors += 1
                if self.on_error is not None:
                    self.on_error(kf.id, exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued (up to ``timeout``), then stop; True when nothing was left."""
        done = self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        return done


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
