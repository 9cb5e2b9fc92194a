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

from ..lens import RECTIFIED, Lens
from ..types import Keyframe
from .errors import MapError, check_float, check_int, check_stamp_ns, check_str, short
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

PAYLOAD_DIR = "keyframes"
# 12 digits, more only for ids past 10**12 (never with a leading zero: one name per id).
PAYLOAD_RE = re.compile(r"\d{12}|[1-9]\d{12,18}")
TEMPORARY_RE = re.compile(r"\.tmp-\d{12,19}-[0-9a-f]{6}")
META_LIMIT = 1 << 20


def payload_name(kf_id: int) -> str:
    return f"{int(kf_id):012d}"


def temporary_path(root: Path, kf_id: int) -> Path:
    """Where a keyframe folder is written before its rename (``TEMPORARY_RE``)."""
    return root / PAYLOAD_DIR / f".tmp-{payload_name(kf_id)}-{uuid.uuid4().hex[:6]}"


def _payload_dirs(root: Path):
    """(name, path) of the entries of ``keyframes/``; nothing when it is missing or a symlink,
    so that no deletion ever reaches outside the map directory."""
    parent = root / PAYLOAD_DIR
    if not is_real_dir(parent):
        return []
    return [(name, parent / name) for name in sorted(os.listdir(parent))]


# -- reading ---------------------------------------------------------------------------------------
def read_payload(path: str | Path, kf_id: int) -> Keyframe | None:
    """A keyframe's re-ranking inputs from a map directory, None when it has none stored
    (no folder, or no ``meta.json``: the folder never became complete). Raises MapError,
    naming the file, when a stored file is damaged."""
    folder = Path(path) / PAYLOAD_DIR / payload_name(kf_id)
    meta_file = folder / "meta.json"
    if not os.path.lexists(meta_file):
        return None
    try:
        meta = _read_meta(meta_file, kf_id)
        for name, digest in meta.get("files", {}).items():
            if sha256(folder / name) != digest:
                raise ValueError(f"{name} is corrupt (sha256 differs from meta.json)")
        return _read_folder(folder, meta)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MapError(f"keyframe folder {folder}: {type(exc).__name__}: {exc}") from None


def _read_meta(meta_file: Path, kf_id: int) -> dict:
    meta = parse_json(read_regular(meta_file, META_LIMIT))
    if not isinstance(meta, dict) or meta.get("id") != kf_id:
        raise ValueError(f"meta.json is not the meta of keyframe {kf_id}")
    files = meta.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(n, str) and "/" not in n and isinstance(h, str) for n, h in files.items()
    ):
        raise ValueError("meta.json: 'files' is not a map of file names to sha256")
    return meta


def _read_folder(folder: Path, meta: dict) -> Keyframe:
    import cv2

    image = None
    if meta.get("image"):
        bgr = cv2.imread(str(folder / "image.png"), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("image.png is unreadable")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    depth = load_npy(folder / "depth.npy") if meta.get("depth") else None
    local = {}
    for name in meta.get("local_features", []):
        check_str(name, "local feature name", 200)
        if "/" in name:
            raise ValueError(f"local feature name {name!r}")
        local[name] = load_npy(folder / f"local.{name}.npy", mmap=True)
    camera_matrix, pose = _matrix(meta.get("camera_matrix"), 3), _matrix(meta.get("pose"), 4)
    kf_id = check_int(meta["id"], "id")
    stamp_ns = meta.get("stamp_ns")  # absent in maps written before exact stamps
    return Keyframe(
        id=kf_id,
        stamp=check_float(meta["stamp"], "stamp"),
        stamp_ns=None if stamp_ns is None else check_stamp_ns(stamp_ns, kf_id),
        lens=_lens(meta.get("lens")),
        base_T_camera=_matrix(meta.get("base_T_camera"), 4),
        base_frame=check_str(meta.get("base_frame", ""), "base_frame"),
        descriptor=np.zeros(0, np.float32),  # the descriptor lives in the index
        image=image,
        camera_matrix=camera_matrix,
        depth=depth,
        pose=pose,
        frame_id=check_str(meta.get("frame_id", ""), "frame_id"),
        camera=check_str(meta.get("camera", ""), "camera"),
        local_features=local,
    )


def _lens(value) -> Lens:
    if value is None:
        return RECTIFIED
    if not isinstance(value, dict):
        raise ValueError(f"meta.json lens {short(value)} is not an object")
    coeffs = value.get("coeffs", [])
    if not isinstance(coeffs, list):
        raise ValueError(f"meta.json lens coefficients {short(coeffs)} are not a list")
    return Lens.from_camera_info(
        check_str(value.get("model", ""), "lens model"), [check_float(c, "lens coefficient") for c in coeffs]
    )


def _matrix(values, n: int) -> np.ndarray | None:
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != n * n:
        raise ValueError(f"meta.json holds {short(values)} where a {n}x{n} matrix belongs")
    return np.array([check_float(v, "matrix value") for v in values], np.float64).reshape(n, n)


def read_payload_pose(path: str | Path, kf_id: int) -> np.ndarray | None:
    """Only the stored 4x4 pose of a keyframe (cheap: reads meta.json alone)."""
    meta_file = Path(path) / PAYLOAD_DIR / payload_name(kf_id) / "meta.json"
    try:
        pose = json.loads(meta_file.read_text()).get("pose")
    except (OSError, ValueError):
        return None
    return None if pose is None else np.asarray(pose, np.float64).reshape(4, 4)


# -- writing ---------------------------------------------------------------------------------------
def write_payload(root: Path, kf: Keyframe, tmp: Path | None = None) -> None:
    """Store a new keyframe's folder in map directory ``root``: every file written and fsynced
    into ``tmp`` (a ``temporary_path``), ``meta.json`` last, the folder checked to hold exactly
    what meta.json lists, then renamed into place (the rename is made durable by the next save,
    before that save commits). On failure the temporary folder is removed; a folder under its
    final name is always complete."""
    import cv2

    parent = root / PAYLOAD_DIR
    parent.mkdir(parents=True, exist_ok=True)
    if not is_real_dir(parent):
        raise MapError(f"{parent} is not a plain directory (a symlink?)")
    final = parent / payload_name(kf.id)
    tmp = tmp or temporary_path(root, kf.id)
    tmp.mkdir()
    try:
        files = {}
        if kf.image is not None:
            ok, png = cv2.imencode(
                ".png", cv2.cvtColor(kf.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]
            )
            if not ok:
                raise MapError(f"cannot PNG-encode keyframe {kf.id}")
            files["image.png"] = write_bytes(tmp / "image.png", png)
        if kf.depth is not None:
            files["depth.npy"] = write_npy(tmp / "depth.npy", np.asarray(kf.depth, np.float32))
        for name, value in kf.local_features.items():
            files[f"local.{name}.npy"] = write_npy(tmp / f"local.{name}.npy", np.asarray(value))
        meta = {
            "id": int(kf.id),
            "stamp": float(kf.stamp),
            "stamp_ns": int(kf.stamp_ns),
            "frame_id": kf.frame_id,
            "lens": {"model": kf.lens.model, "coeffs": list(kf.lens.coeffs)},
            "base_T_camera": _floats(kf.base_T_camera),
            "base_frame": kf.base_frame,
            "camera": kf.camera,
            "camera_matrix": _floats(kf.camera_matrix),
            "pose": _floats(kf.pose),
            "image": kf.image is not None,
            "depth": kf.depth is not None,
            "local_features": sorted(kf.local_features),
            "files": files,
        }
        write_bytes(tmp / "meta.json", json.dumps(meta).encode())
        fsync_path(tmp)
        present = set(os.listdir(tmp))
        if present != {*files, "meta.json"}:
            raise MapError(f"keyframe {kf.id}: folder incomplete before its rename: {sorted(present)}")
        if os.path.lexists(final):  # left over from a crash before the map that named it was saved
            remove_tree(final)
        os.rename(tmp, final)
    except BaseException:
        remove_tree(tmp)
        raise


def _floats(matrix) -> list[float] | None:
    if matrix is None:
        return None
    values = [float(v) for v in np.ravel(matrix)]
    return values if all(np.isfinite(values)) else None  # meta.json holds finite numbers only


def sync_folders(root: Path, folders: list[Path]) -> None:
    """Make keyframe folders that were written without fsync (copies) durable."""
    for folder in folders:
        for file in folder.iterdir():
            fsync_path(file)
        fsync_path(folder)
    if folders:
        fsync_path(root / PAYLOAD_DIR)


def copy_payloads(source: Path, root: Path, ids: list[int]) -> None:
    """For a save to another directory: hard-link (else copy) every keyframe folder; only
    plain files are copied, never what a symlink points to."""
    target = root / PAYLOAD_DIR
    target.mkdir(parents=True, exist_ok=True)
    if not is_real_dir(target):
        raise MapError(f"{target} is not a plain directory (a symlink?)")
    copied = []
    for kf_id in ids:
        src = source / PAYLOAD_DIR / payload_name(kf_id)
        dst = target / payload_name(kf_id)
        if not is_real_dir(src) or os.path.lexists(dst) or not os.path.lexists(src / "meta.json"):
            continue
        tmp = temporary_path(root, kf_id)
        tmp.mkdir()
        try:
            for entry in os.scandir(src):
                if not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    os.link(entry.path, tmp / entry.name, follow_symlinks=False)
                except OSError:  # another file system
                    shutil.copyfile(entry.path, tmp / entry.name, follow_symlinks=False)
            os.rename(tmp, dst)
        except BaseException:
            remove_tree(tmp)
            raise
        copied.append(dst)
    sync_folders(root, copied)


def remove_unnamed_payloads(root: Path, records: set[int], next_id: int) -> None:
    """After a commit: keyframe folders below ``next_id`` that the snapshot lacks (a reset).

    Temporary folders are left alone: the writer thread may be filling one right now (for a
    keyframe newer than the snapshot). Stale ones go on the next open or load."""
    for name, p in _payload_dirs(root):
        # Folders at or past next_id belong to keyframes added after the snapshot.
        if PAYLOAD_RE.fullmatch(name) and int(name) < next_id and int(name) not in records:
            remove_tree(p)


def discard_unsaved_payloads(root: Path, next_id: int, keep: set[str] = frozenset()) -> int:
    """On open and load, before any writer works there: keyframe folders at or past the saved
    ``next_id`` were never part of a saved map (a crash after they were written; their ids
    will be given out again) and temporary folders are leftovers of a crash. ``keep``: names
    of temporary folders a writer that is still closing owns."""
    removed = 0
    for name, p in _payload_dirs(root):
        stale = (TEMPORARY_RE.fullmatch(name) and name not in keep) or (
            PAYLOAD_RE.fullmatch(name) and int(name) >= next_id
        )
        if stale:
            remove_tree(p)
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
        self._submitted = self._finished = 0  # keyframes queued / written or failed, ever
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
            self._submitted += 1
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """True when every keyframe submitted before this call has been written (or has
        failed). Later ones are not waited for, so a save is not starved by new keyframes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            while self._finished < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._finished >= target

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
                    self._finished += 1
                    self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued (up to ``timeout``), then stop; True when nothing was left.
        Keyframes still queued after ``timeout`` are dropped (no saved map names them: a save
        flushes first), so the thread stops after the folder it is writing."""
        done = self.flush(timeout)
        with self._cond:
            self._stop = True
            self._finished += len(self._queue)  # dropped: no flush waits for them
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        return done
