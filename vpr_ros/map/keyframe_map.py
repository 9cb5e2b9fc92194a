"""Incremental FAISS map of keyframe descriptors with recent-keyframe exclusion.

Recent keyframes are never loop candidates: the newest ``exclude_recent`` ones, those within
``exclude_seconds``, those within ``exclude_distance_m`` of odometry path (each record keeps
the path length driven up to it, so a slow or stopped robot is covered whatever the clock
says) and, on request, every keyframe from a given id on (a stationary run). Every rule but
the time one cuts the newest ids, so together they are one id limit, found by bisection.

The index is described by a FAISS ``index_factory`` string ("Flat", "HNSW32",
"IVF1024,PQ64", ...) over inner product, which is cosine similarity for the L2-normalised
descriptors every model produces. Keyframe ids are stored in the index (IDMap), so they stay
stable across restarts. Indexes that need training (IVF, PQ) are searched exactly from a
pending buffer until ``train_size`` descriptors have arrived, then trained once.

``snapshot()`` copies the whole map state into plain arrays and lists (fast, so a caller can
hold its lock only for that), and ``KeyframeMap.restore`` rebuilds a map from one; the files
on disk are ``store``'s business.
"""

from __future__ import annotations

import bisect
import logging
import math
from array import array
from dataclasses import dataclass

import faiss
import numpy as np

from ..geometry import is_valid_pose
from ..types import Candidate, sec_to_ns
from .errors import check_float, check_int, check_stamp_ns, check_str, short

log = logging.getLogger(__name__)


@dataclass
class KeyframeRecord:
    id: int
    stamp: float
    frame_id: str = ""
    camera: str = ""
    pose: np.ndarray | None = None  # 4x4 odom_T_camera when known
    stamp_ns: int | None = None  # exact header stamp (maps written before it: from ``stamp``)
    # Metres of odometry path from the map's first posed keyframe (None: no pose, or a map
    # written before it; such keyframes fall back to the keyframe and seconds rules).
    path_length: float | None = None

    def __post_init__(self):
        if self.stamp_ns is None:
            self.stamp_ns = sec_to_ns(self.stamp)

    def to_dict(self) -> dict:
        pose = None if self.pose is None else [float(v) for v in np.ravel(self.pose)]
        if pose is not None and not all(math.isfinite(v) for v in pose):
            pose = None  # a map file holds finite numbers only (from_dict refuses others)
        return {
            "id": self.id,
            "stamp": self.stamp,
            "stamp_ns": self.stamp_ns,
            "frame_id": self.frame_id,
            "camera": self.camera,
            "pose": pose,
            "path_length": self.path_length if _finite(self.path_length) else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> KeyframeRecord:
        """A record read from a map file; ValueError (saying which field) when anything is off."""
        if not isinstance(d, dict):
            raise ValueError(f"keyframe record {short(d)} is not an object")
        kf_id = check_int(d.get("id"), "keyframe id")
        pose = d.get("pose")
        if pose is not None:
            if not isinstance(pose, list) or len(pose) != 16:
                raise ValueError(f"keyframe {kf_id}: pose {short(pose)} is not 16 numbers")
            pose = np.array([check_float(v, f"keyframe {kf_id} pose value") for v in pose]).reshape(4, 4)
        path = d.get("path_length")
        if path is not None:
            path = check_float(path, f"keyframe {kf_id} path_length")
            if path < 0:
                raise ValueError(f"keyframe {kf_id}: path_length {path} is negative")
        return cls(
            id=kf_id,
            stamp=check_float(d.get("stamp"), f"keyframe {kf_id} stamp"),
            stamp_ns=None if d.get("stamp_ns") is None else check_stamp_ns(d["stamp_ns"], kf_id),
            frame_id=check_str(d.get("frame_id", ""), f"keyframe {kf_id} frame_id"),
            camera=check_str(d.get("camera", ""), f"keyframe {kf_id} camera"),
            pose=pose,
            path_length=path,
        )


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


@dataclass
class MapSnapshot:
    """Everything needed to rebuild a map, detached from the live one."""

    dim: int
    index_factory: str
    next_id: int
    index_bytes: np.ndarray  # faiss.serialize_index of the CPU index (uint8)
    records: list[KeyframeRecord]
    pending_ids: np.ndarray  # [P] int64: keyframes not yet in the (untrained) index
    pending: np.ndarray  # [P, dim] float32

    @property
    def num_keyframes(self) -> int:
        return len(self.records)


def check_index(index, dim: int) -> None:
    """What a map's index must be: IndexIDMap2 over inner product, ``dim``-D vectors."""
    if not isinstance(index, faiss.IndexIDMap2):
        raise ValueError(f"index.faiss holds a {type(index).__name__}, not an IndexIDMap2")
    metrics = {index.metric_type, faiss.downcast_index(index.index).metric_type}
    if metrics != {faiss.METRIC_INNER_PRODUCT}:
        names = {faiss.METRIC_L2: "L2", faiss.METRIC_INNER_PRODUCT: "inner product"}
        used = ", ".join(names.get(m, str(m)) for m in sorted(metrics))
        raise ValueError(f"index.faiss uses metric {used}, not inner product only")
    if index.d != dim:
        raise ValueError(f"index.faiss holds {index.d}-D vectors, the map {dim}-D")
    if index.ntotal != index.id_map.size():
        raise ValueError(f"index.faiss holds {index.ntotal} vectors but {index.id_map.size()} ids")


def faiss_gpu_available() -> bool:
    """True when this faiss build has GPU support and a GPU is visible (faiss-gpu + CUDA)."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class KeyframeMap:
    def __init__(
        self,
        dim: int,
        index_factory: str = "Flat",
        device: str = "auto",
        train_size: int = 10000,
        index: faiss.Index | None = None,
    ):
        self.dim = int(dim)
        self.index_factory = index_factory
        if index is None:
            base = faiss.index_factory(self.dim, index_factory, faiss.METRIC_INNER_PRODUCT)
            index = faiss.IndexIDMap2(base)
        elif index.d != self.dim:
            raise ValueError(f"index holds {index.d}-D vectors, map expects {self.dim}")
        self.on_gpu = device in ("auto", "cuda") and faiss_gpu_available()
        if device == "cuda" and not self.on_gpu:
            raise RuntimeError(
                "map device 'cuda' requested but faiss has no GPU support here (install faiss-gpu)"
            )
        if self.on_gpu:  # same results as the CPU index, searched on the GPU
            self._gpu_resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
        self.index = index
        self.train_size = int(train_size)
        self.records: dict[int, KeyframeRecord] = {}
        self._pending_ids: list[int] = []
        self._pending: list[np.ndarray] = []
        self._next_id = 0
        self._reset_path()

    def _reset_path(self) -> None:
        # Keyframes with a path length, in id order (so the lengths never decrease): the
        # distance rule bisects them (typed arrays: 16 bytes a keyframe). The newest posed one
        # is where the path goes on from.
        self._path_ids = array("q")
        self._path_lengths = array("d")
        self._path_tail: tuple[np.ndarray, float] | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def next_id(self) -> int:
        return self._next_id

    def reserve_id(self) -> int:
        """An id for a query that is not added (localisation mode): ids never repeat."""
        kf_id = self._next_id
        self._next_id += 1
        return kf_id

    def clear(self) -> None:
        """Remove every keyframe; ids keep counting from where they were (never reused)."""
        self.index.reset()
        self.records.clear()
        self._pending, self._pending_ids = [], []
        self._reset_path()

    def snapshot(self) -> MapSnapshot:
        index = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        pending = np.stack(self._pending) if self._pending else np.zeros((0, self.dim), np.float32)
        return MapSnapshot(
            dim=self.dim,
            index_factory=self.index_factory,
            next_id=self._next_id,
            index_bytes=faiss.serialize_index(index),
            records=[self.records[k] for k in sorted(self.records)],
            pending_ids=np.asarray(self._pending_ids, dtype=np.int64),
            pending=pending.astype(np.float32, copy=False),
        )

    @classmethod
    def restore(cls, snap: MapSnapshot, device: str = "auto", train_size: int = 10000) -> KeyframeMap:
        """Rebuild a map from a snapshot; raises ValueError (naming the file whose content is
        wrong) when its parts are malformed or do not agree. Nothing is changed before that."""
        index = faiss.deserialize_index(np.asarray(snap.index_bytes, dtype=np.uint8))
        check_index(index, snap.dim)
        ids = [r.id for r in snap.records]
        if len(set(ids)) != len(ids):
            raise ValueError("keyframes.json repeats a keyframe id")
        if ids and max(ids) >= snap.next_id:
            raise ValueError(f"keyframe id {max(ids)} is not below the map's next_id {snap.next_id}")
        pending_ids = np.asarray(snap.pending_ids)
        if pending_ids.ndim != 1 or pending_ids.dtype != np.int64:
            raise ValueError(f"pending_ids.npy holds {pending_ids.dtype} {pending_ids.shape}, not int64 [P]")
        if snap.pending.dtype != np.float32 or snap.pending.shape != (len(pending_ids), snap.dim):
            raise ValueError(
                f"pending.npy holds {snap.pending.dtype} {snap.pending.shape}, "
                f"expected float32 ({len(pending_ids)}, {snap.dim})"
            )
        if not np.all(np.isfinite(snap.pending)):
            raise ValueError("pending.npy holds NaN or Inf")
        indexed = faiss.vector_to_array(index.id_map).astype(np.int64)
        stored = np.concatenate([indexed, pending_ids])
        if len(np.unique(stored)) != len(stored):
            raise ValueError("index.faiss and pending_ids.npy repeat a keyframe id")
        if set(stored.tolist()) != set(ids):
            strays = sorted(set(stored.tolist()) - set(ids))[:5]
            lost = sorted(set(ids) - set(stored.tolist()))[:5]
            raise ValueError(
                f"index.faiss + pending_ids.npy ({len(stored)} ids) and keyframes.json ({len(ids)} records) "
                f"disagree: ids without a record {strays}, records without a descriptor {lost}"
            )
        kmap = cls(snap.dim, snap.index_factory, device=device, train_size=train_size, index=index)
        for record in sorted(snap.records, key=lambda r: r.id):
            kmap._index_path(record)  # refuses path lengths that go down
        kmap.records = {r.id: r for r in snap.records}
        kmap._pending = list(snap.pending)
        kmap._pending_ids = [int(i) for i in pending_ids]
        kmap._next_id = int(snap.next_id)
        return kmap

    def _check(self, descriptor: np.ndarray) -> np.ndarray:
        x = np.asarray(descriptor, dtype=np.float32).reshape(1, -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"descriptor has {x.shape[1]} values, map expects {self.dim}")
        if not np.all(np.isfinite(x)):
            raise ValueError("descriptor contains NaN or Inf")
        return x

    def add(self, descriptor: np.ndarray, stamp: float, **record_fields) -> int:
        """Add one keyframe; returns its id (ids increase monotonically)."""
        x = self._check(descriptor)
        if not math.isfinite(stamp):
            raise ValueError(f"keyframe stamp {stamp} is not finite")
        if "path_length" not in record_fields:
            record_fields["path_length"] = self.path_length_at(record_fields.get("pose"))
        record = KeyframeRecord(id=self._next_id, stamp=float(stamp), **record_fields)
        self._index_path(record)
        kf_id = self._next_id
        self._next_id += 1
        self.records[kf_id] = record
        if self.index.is_trained:
            self.index.add_with_ids(x, np.array([kf_id], dtype=np.int64))
        else:
            self._pending.append(x[0])
            self._pending_ids.append(kf_id)
            if len(self._pending) >= self.train_size:
                self._train()
        return kf_id

    def path_length_at(self, pose: np.ndarray | None) -> float | None:
        """The path length of a keyframe at ``pose`` added now: the newest posed keyframe's
        plus the straight step from it (0 for the first). None without a valid pose (one NaN
        step would end the path)."""
        if pose is None or not is_valid_pose(pose):
            return None
        if self._path_tail is None:
            return 0.0
        tail_pose, tail_length = self._path_tail
        return tail_length + float(np.linalg.norm(np.asarray(pose, np.float64)[:3, 3] - tail_pose[:3, 3]))

    def _index_path(self, record: KeyframeRecord) -> None:
        if record.path_length is None:
            return
        if self._path_lengths and record.path_length < self._path_lengths[-1]:
            raise ValueError(
                f"keyframe {record.id} path_length {record.path_length} is below the "
                f"{self._path_lengths[-1]} of keyframe {self._path_ids[-1]}"
            )
        self._path_ids.append(record.id)
        self._path_lengths.append(record.path_length)
        if record.pose is not None and is_valid_pose(record.pose):
            self._path_tail = (np.asarray(record.pose, np.float64), record.path_length)

    def _train(self) -> None:
        data = np.stack(self._pending)
        log.info("training FAISS index '%s' on %d descriptors", self.index_factory, len(data))
        self.index.train(data)
        self.index.add_with_ids(data, np.asarray(self._pending_ids, dtype=np.int64))
        self._pending, self._pending_ids = [], []

    def search(
        self,
        descriptor: np.ndarray,
        k: int,
        exclude_recent: int = 0,
        exclude_seconds: float = 0.0,
        query_stamp: float | None = None,
        min_similarity: float = -1.0,
        exclude_distance_m: float = 0.0,
        query_path_length: float | None = None,
        exclude_from_id: int | None = None,
    ) -> list[Candidate]:
        """Top-k keyframes by similarity, best first, skipping the ``exclude_recent`` newest
        keyframes, those within ``exclude_seconds`` of ``query_stamp``, those less than
        ``exclude_distance_m`` of path before ``query_path_length`` (``path_length_at``) and
        every keyframe with an id of at least ``exclude_from_id``."""
        x = self._check(descriptor)
        if k <= 0 or not self.records:
            return []
        newest_allowed = self._next_id - 1 - max(0, exclude_recent)
        if exclude_distance_m > 0 and query_path_length is not None:
            # Lengths grow with the ids: the first one within the distance, and every keyframe
            # after it (with a pose or not: it lies on the path since then), are too near.
            near = bisect.bisect_right(self._path_lengths, query_path_length - exclude_distance_m)
            if near < len(self._path_ids):
                newest_allowed = min(newest_allowed, self._path_ids[near] - 1)
        if exclude_from_id is not None:
            newest_allowed = min(newest_allowed, exclude_from_id - 1)
        time_limit = None
        if exclude_seconds > 0 and query_stamp is not None:
            time_limit = query_stamp - exclude_seconds

        def allowed(kf_id: int) -> bool:
            if kf_id < 0 or kf_id > newest_allowed or kf_id not in self.records:
                return False
            return time_limit is None or self.records[kf_id].stamp <= time_limit

        # Ask for k more than the ids cut off, so that k allowed ones come back unless the time
        # rule (stamps may jump back) drops more; widen then.
        want = k + max(0, self._next_id - 1 - newest_allowed)
        while True:
            ids, sims = self._raw_search(x, want)
            out = [
                Candidate(int(i), (rec := self.records[int(i)]).stamp, float(s), rec.frame_id, rec.stamp_ns)
                for i, s in zip(ids, sims, strict=True)
                if allowed(int(i)) and s >= min_similarity
            ]
            if len(out) >= k or want >= len(self.records):
                return out[:k]
            want = min(len(self.records), want * 2)

    def _raw_search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids_parts, sims_parts = [], []
        if self.index.ntotal:
            sims, ids = self.index.search(x, min(k, self.index.ntotal))
            keep = ids[0] >= 0
            ids_parts.append(ids[0][keep])
            sims_parts.append(sims[0][keep])
        if self._pending:
            sims = np.stack(self._pending) @ x[0]
            ids_parts.append(np.asarray(self._pending_ids, dtype=np.int64))
            sims_parts.append(sims)
        ids = np.concatenate(ids_parts)
        sims = np.concatenate(sims_parts)
        order = np.argsort(-sims, kind="stable")[:k]
        return ids[order], sims[order]
