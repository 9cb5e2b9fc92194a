"""Per-keyframe local features for re-ranking, bounded in RAM.

Local features dominate a map's memory (Pair-VPR dense maps are ~1.6 MB per keyframe in
fp32), so the store keeps at most ``ram_budget_bytes`` in memory. Past that, the oldest
entries move to ``spill_dir`` as plain ``.npy`` files (never pickles) and come back
memory-mapped on access, so a spilled keyframe costs page cache, not heap.

``float16=True`` halves float arrays on the way in. Arrays whose precision matters more than
their size (pixel coordinates, patch-grid geometry) are named in ``put(..., exact=...)`` and
are kept as given.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

Features = dict[str, np.ndarray]
# Names become file names when an entry spills to disk.
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def _nbytes(features: Features) -> int:
    return sum(int(v.nbytes) for v in features.values())


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class FeatureStore:
    def __init__(
        self, ram_budget_bytes: int = 512 * 2**20, spill_dir: str | None = None, float16: bool = False
    ):
        if ram_budget_bytes < 0:
            raise ValueError(f"ram_budget_bytes must be >= 0, got {ram_budget_bytes}")
        self.ram_budget_bytes = int(ram_budget_bytes)
        self.float16 = float16
        self._own_spill_dir = not spill_dir
        self._spill_dir = Path(spill_dir) if spill_dir else None
        self._ram: OrderedDict[int, Features] = OrderedDict()
        self._on_disk: dict[int, list[str]] = {}
        self.ram_bytes = 0
        self.disk_bytes = 0
        self._disk_sizes: dict[int, int] = {}
        self._finalizer = None

    def __contains__(self, kf_id: int) -> bool:
        return kf_id in self._ram or kf_id in self._on_disk

    def __len__(self) -> int:
        return len(self._ram) + len(self._on_disk)

    @property
    def num_spilled(self) -> int:
        return len(self._on_disk)

    def put(self, kf_id: int, features: Features, exact: Iterable[str] = ()) -> None:
        """Store ``features`` of keyframe ``kf_id`` (replacing earlier ones).

        Float arrays become float16 when the store was made with ``float16=True``, except the
        names in ``exact``.
        """
        if kf_id in self:
            self.remove(kf_id)
        exact = set(exact)
        stored = {}
        for name, value in features.items():
            if not _NAME.match(name):
                raise ValueError(f"feature name {name!r}: use letters, digits and underscores only")
            value = np.asarray(value)
            if self.float16 and name not in exact and value.dtype in (np.float32, np.float64):
                value = value.astype(np.float16)
            stored[name] = np.ascontiguousarray(value)
        self._ram[kf_id] = stored
        self.ram_bytes += _nbytes(stored)
        # The newest entry always stays in RAM: it is about to be used as a query.
        while self.ram_bytes > self.ram_budget_bytes and len(self._ram) > 1:
            self._spill_oldest()

    def get(self, kf_id: int) -> Features | None:
        """Features of a keyframe (float16 entries are returned as stored), or None.

        Spilled entries are read-only memory maps of their ``.npy`` files.
        """
        if kf_id in self._ram:
            return self._ram[kf_id]
        names = self._on_disk.get(kf_id)
        if names is None:
            return None
        folder = self._spill_path() / str(kf_id)
        return {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in names}

    def remove(self, kf_id: int) -> None:
        if kf_id in self._ram:
            self.ram_bytes -= _nbytes(self._ram.pop(kf_id))
        if self._on_disk.pop(kf_id, None) is not None:
            self.disk_bytes -= self._disk_sizes.pop(kf_id, 0)
            _remove_tree(self._spill_path() / str(kf_id))

    @property
    def spill_dir(self) -> Path | None:
        return self._spill_dir

    def _spill_path(self) -> Path:
        if self._spill_dir is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix="vpr_ros_features_"))
        if self._own_spill_dir and self._finalizer is None:
            # A temporary spill folder goes away with the store even if close() is never called.
            self._finalizer = weakref.finalize(self, _remove_tree, self._spill_dir)
        self._spill_dir.mkdir(parents=True, exist_ok=True)
        return self._spill_dir

    def _spill_oldest(self) -> None:
        kf_id, features = self._ram.popitem(last=False)
        size = _nbytes(features)
        self.ram_bytes -= size
        folder = self._spill_path() / str(kf_id)
        folder.mkdir(exist_ok=True)
        for name, value in features.items():
            np.save(folder / f"{name}.npy", value, allow_pickle=False)
        self._on_disk[kf_id] = list(features)
        self._disk_sizes[kf_id] = size
        self.disk_bytes += size

    def clear(self) -> None:
        """Forget every keyframe and delete its spill files; the store stays usable."""
        for kf_id in list(self._on_disk):
            self.remove(kf_id)
        self._ram.clear()
        self.ram_bytes = 0

    def close(self) -> None:
        """Forget everything; a temporary spill folder is deleted (a given one keeps no stale files)."""
        self.clear()
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
            self._spill_dir = None
