"""The keyframe map: FAISS search in memory, a versioned, crash-safe directory on disk.

Layout of a map directory::

    map.json                 version file and pointer: format version, model, descriptor size,
                             index factory, counts, and which snapshot is current
    snapshot-000012-1a2b3c/  the current snapshot (written complete before map.json names it)
        index.faiss          FAISS index (IDMap2 over the index factory, inner product)
        keyframes.json       keyframe records: id, stamp, frame id, camera, optional 4x4 pose
        pending.npy          descriptors not yet in an untrained (IVF/PQ) index, with their ids
        pending_ids.npy
    keyframes/000000000042/  what re-rankers need about keyframe 42, written once when it is added

No pickles anywhere: JSON, PNG, ``.npy`` read with ``allow_pickle=False``, and FAISS's own
index format.

Modules: ``keyframe_map`` (the in-memory index), ``store`` (snapshots: save, load,
validation), ``payloads`` (keyframe folders and their writer thread), ``files`` (durable
writes), ``session`` (a node's map: open, add, save, load, reset, with their locks).
"""

from .errors import MapError, MapMismatchError
from .keyframe_map import KeyframeMap, KeyframeRecord, MapSnapshot
from .payloads import PAYLOAD_DIR, PayloadWriter, read_payload, read_payload_pose
from .session import MapSession, SavedMap, SessionInfo
from .store import POINTER, MapInfo, MapStore, check_save_target, load_map, open_map, read_info

__all__ = [
    "PAYLOAD_DIR",
    "POINTER",
    "KeyframeMap",
    "KeyframeRecord",
    "MapError",
    "MapInfo",
    "MapMismatchError",
    "MapSession",
    "MapSnapshot",
    "MapStore",
    "PayloadWriter",
    "SavedMap",
    "SessionInfo",
    "check_save_target",
    "load_map",
    "open_map",
    "read_info",
    "read_payload",
    "read_payload_pose",
]
