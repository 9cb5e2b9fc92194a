"""Keyframe folders: what re-rankers need about each keyframe, stored once when it is added.

``keyframes/000000000042/`` holds ``meta.json`` (stamp, frame id, camera, intrinsics, pose,
which arrays exist), ``image.png`` (the downscaled verification image, lossless),
``depth.npy`` (aligned depth in metres, when there was one) and ``local.<name>.npy`` (model
local features, memory-mapped on read).

A folder is written under a temporary name, its files fsynced, then renamed into place, and
never changed afterwards; the rename becomes durable with the next snapshot save (see
``store``). The map keeps re-ranker *inputs* rather than one re-ranker's features, so a saved
map works with any re-ranker. ``PayloadWriter`` does the writing off the camera's thread.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from ..types import Keyframe
from .errors import MapError
from .files import fsync_path, load_npy, write_bytes, write_npy

PAYLOAD_DIR = "keyframes"
PAYLOAD_RE = re.compile(r"^\d{12}$")


def payload_name(kf_id: int) -> str:
    return f"{int(kf_id):012d}"


def _temporary(parent: Path, kf_id: int) -> Path:
    return parent / f".tmp-{payload_name(kf_id)}-{uuid.uuid4().hex[:6]}"


# -- reading ---------------------------------------------------------------------------------------
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
    depth = load_npy(folder / "depth.npy") if meta.get("depth") else None
    local = {
        name: load_npy(folder / f"local.{name}.npy", mmap=True) for name in meta.get("local_features", [])
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
def write_payload(root: Path, kf: Keyframe) -> None:
    """Store a new keyframe's folder in map directory ``root``: files fsynced, then renamed
    into place (the rename is made durable by the next save, before that save commits)."""
    import cv2

    parent = root / PAYLOAD_DIR
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / payload_name(kf.id)
    tmp = _temporary(parent, kf.id)
    tmp.mkdir()
    meta = {
        "id": int(kf.id),
        "stamp": float(kf.stamp),
        "frame_id": kf.frame_id,
        "camera": kf.camera,
        "camera_matrix": None if kf.camera_matrix is None else [float(v) for v in np.ravel(kf.camera_matrix)],
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
        write_bytes(tmp / "image.png", png)
    if kf.depth is not None:
        write_npy(tmp / "depth.npy", np.asarray(kf.depth, np.float32))
    for name, value in kf.local_features.items():
        write_npy(tmp / f"local.{name}.npy", np.asarray(value))
    write_bytes(tmp / "meta.json", json.dumps(meta).encode())
    fsync_path(tmp)
    if final.exists():  # left over from a crash before the map that named it was saved
        shutil.rmtree(final)
    os.rename(tmp, final)


def sync_folders(root: Path, folders: list[Path]) -> None:
    """Make keyframe folders that were written without fsync (copies) durable."""
    for folder in folders:
        for file in folder.iterdir():
            fsync_path(file)
        fsync_path(folder)
    if folders:
        fsync_path(root / PAYLOAD_DIR)


def copy_payloads(source: Path, root: Path, ids: list[int]) -> None:
    """For a save to another directory: hard-link (else copy) every keyframe folder."""
    target = root / PAYLOAD_DIR
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for kf_id in ids:
        src = source / PAYLOAD_DIR / payload_name(kf_id)
        dst = target / payload_name(kf_id)
        if not src.is_dir() or dst.exists():
            continue
        tmp = _temporary(target, kf_id)
        tmp.mkdir()
        for file in src.iterdir():
            try:
                os.link(file, tmp / file.name)
            except OSError:  # another file system
                shutil.copy2(file, tmp / file.name)
        os.rename(tmp, dst)
        copied.append(dst)
    sync_folders(root, copied)


def remove_unnamed_payloads(root: Path, records: set[int], next_id: int) -> None:
    """After a commit: temporary folders and keyframes below ``next_id`` the snapshot lacks."""
    payloads = root / PAYLOAD_DIR
    if payloads.is_dir():
        for p in payloads.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)
            # Folders at or past next_id belong to keyframes added after the snapshot.
            elif PAYLOAD_RE.match(p.name) and int(p.name) < next_id and int(p.name) not in records:
                shutil.rmtree(p, ignore_errors=True)


def discard_unsaved_payloads(root: Path, next_id: int) -> int:
    """On load: keyframe folders at or past the saved ``next_id`` were never part of a saved
    map (a crash after they were written); their ids will be given out again."""
    payloads = root / PAYLOAD_DIR
    removed = 0
    if payloads.is_dir():
        for p in payloads.iterdir():
            stale = p.name.startswith(".tmp-") or (PAYLOAD_RE.match(p.name) and int(p.name) >= next_id)
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
    ``store`` is anything with ``write_payload(keyframe)`` (a ``MapStore``).
    """

    def __init__(self, store, max_pending: int = 16, on_error=None):
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
