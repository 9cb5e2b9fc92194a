"""Per-keyframe local features for re-ranking, bounded in RAM.

Local features dominate a map's memory (Pair-VPR dense maps are ~1.6 MB per keyframe), so
the store keeps at most ``ram_budget_bytes`` in memory. Past that, the oldest entries move
to ``spill_dir`` as plain ``.npy`` files (never pickles) and come back memory-mapped on
access. ``float16=True`` halves float arrays on the way in.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

Features = dict[str, np.ndarray]


def _nbytes(features: Features) -> int:
    return sum(int(v.nbytes) for v in features.values())


class FeatureStore:
    def __init__(
        self, ram_budget_bytes: int = 512 * 2**20, spill_dir: str | None = None, float16: bool = False
    ):
        self.ram_budget_bytes = int(ram_budget_bytes)
        self.float16 = float16
        self._own_spill_dir = spill_dir is None
        self._spill_dir = Path(spill_dir) if spill_dir else None
        self._ram: OrderedDict[int, Features] = OrderedDict()
        self._on_disk: dict[int, list[str]] = {}
        self.ram_bytes = 0

    def __contains__(self, kf_id: int) -> bool:
        return kf_id in self._ram or kf_id in self._on_disk

    def __len__(self) -> int:
        return len(self._ram) + len(self._on_disk)

    @property
    def num_spilled(self) -> int:
        return len(self._on_disk)

    def put(self, kf_id: int, features: Features) -> None:
        if kf_id in self:
            self.remove(kf_id)
        stored = {}
        for name, value in features.items():
            value = np.asarray(value)
            if self.float16 and value.dtype in (np.float32, np.float64):
                value = value.astype(np.float16)
            stored[name] = np.ascontiguousarray(value)
        self._ram[kf_id] = stored
        self.ram_bytes += _nbytes(stored)
        while self.ram_bytes > self.ram_budget_bytes and len(self._ram) > 1:
            self._spill_oldest()

    def get(self, kf_id: int) -> Features | None:
        """Features of a keyframe (float16 entries are returned as stored), or None."""
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
            shutil.rmtree(self._spill_path() / str(kf_id), ignore_errors=True)

    def _spill_path(self) -> Path:
        if self._spill_dir is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix="vpr_ros_features_"))
        self._spill_dir.mkdir(parents=True, exist_ok=True)
        return self._spill_dir

    def _spill_oldest(self) -> None:
        kf_id, features = self._ram.popitem(last=False)
        self.ram_bytes -= _nbytes(features)
        folder = self._spill_path() / str(kf_id)
        folder.mkdir(exist_ok=True)
        for name, value in features.items():
            np.save(folder / f"{name}.npy", value, allow_pickle=False)
        self._on_disk[kf_id] = list(features)

    def close(self) -> None:
        if self._own_spill_dir and self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = None
