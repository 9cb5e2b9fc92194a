"""FeatureStore: RAM budget, fp16, spill to memory-mapped .npy files, retrieval after spill."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.feature_store import FeatureStore


def _features(seed: int, n: int = 256) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "dense": rng.standard_normal((n, 16)).astype(np.float32),
        "keypoints": (rng.random((n, 2)) * 640).astype(np.float32),
        "descriptors": rng.integers(0, 256, (n, 32), dtype=np.uint8),
    }


def test_entries_within_budget_stay_in_ram_and_come_back_unchanged(tmp_path):
    store = FeatureStore(ram_budget_bytes=10 * 2**20, spill_dir=str(tmp_path))
    feats = {i: _features(i) for i in range(5)}
    for i, f in feats.items():
        store.put(i, f)
    assert len(store) == 5 and store.num_spilled == 0
    assert store.ram_bytes == sum(v.nbytes for f in feats.values() for v in f.values())
    for i, f in feats.items():
        got = store.get(i)
        for name, value in f.items():
            np.testing.assert_array_equal(got[name], value)
            assert got[name].dtype == value.dtype
    assert store.get(99) is None and 99 not in store
    assert not any(tmp_path.iterdir())  # nothing written while under budget


def test_past_the_budget_oldest_entries_spill_to_memory_mapped_npy(tmp_path):
    one = sum(v.nbytes for v in _features(0).values())
    store = FeatureStore(ram_budget_bytes=int(2.5 * one), spill_dir=str(tmp_path))
    feats = {i: _features(i) for i in range(6)}
    for i, f in feats.items():
        store.put(i, f)
        assert store.ram_bytes <= store.ram_budget_bytes
    assert store.num_spilled == 4 and len(store) == 6
    assert store.disk_bytes == 4 * one
    # The oldest went to disk as plain .npy files, one folder per keyframe.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2", "3"]
    assert sorted(p.name for p in (tmp_path / "0").iterdir()) == [
        "dense.npy",
        "descriptors.npy",
        "keypoints.npy",
    ]
    for i, f in feats.items():
        got = store.get(i)
        for name, value in f.items():
            np.testing.assert_array_equal(got[name], value)
    spilled = store.get(0)["dense"]
    assert isinstance(spilled, np.memmap) and not spilled.flags.writeable
    assert not isinstance(store.get(5)["dense"], np.memmap)


def test_replacing_and_removing_a_spilled_entry(tmp_path):
    one = sum(v.nbytes for v in _features(0).values())
    store = FeatureStore(ram_budget_bytes=one, spill_dir=str(tmp_path))
    for i in range(3):
        store.put(i, _features(i))
    assert store.num_spilled == 2
    store.put(0, _features(10))  # 0 was on disk: replaced, now the newest in RAM
    np.testing.assert_array_equal(store.get(0)["dense"], _features(10)["dense"])
    assert 0 not in {int(p.name) for p in tmp_path.iterdir()}
    store.remove(1)
    assert 1 not in store and not (tmp_path / "1").exists()
    assert store.disk_bytes == sum(one for _ in range(store.num_spilled))


def test_float16_halves_float_features_but_keeps_exact_ones(tmp_path):
    f = _features(3)
    store = FeatureStore(ram_budget_bytes=2**30, spill_dir=str(tmp_path), float16=True)
    store.put(1, f, exact=("keypoints",))
    got = store.get(1)
    assert got["dense"].dtype == np.float16
    np.testing.assert_allclose(got["dense"].astype(np.float32), f["dense"], rtol=1e-3, atol=1e-3)
    assert got["keypoints"].dtype == np.float32  # pixel coordinates: no 0.5 px rounding
    np.testing.assert_array_equal(got["keypoints"], f["keypoints"])
    assert got["descriptors"].dtype == np.uint8
    fp32 = FeatureStore(ram_budget_bytes=2**30, spill_dir=str(tmp_path))
    fp32.put(1, f)
    assert store.ram_bytes < fp32.ram_bytes
    assert store.ram_bytes == fp32.ram_bytes - f["dense"].nbytes // 2


def test_float16_entries_spill_as_float16(tmp_path):
    store = FeatureStore(ram_budget_bytes=0, spill_dir=str(tmp_path), float16=True)
    store.put(1, _features(1))
    store.put(2, _features(2))
    got = store.get(1)
    assert isinstance(got["dense"], np.memmap) and got["dense"].dtype == np.float16
    assert np.load(tmp_path / "1" / "dense.npy").dtype == np.float16


def test_temporary_spill_folder_is_removed_on_close():
    store = FeatureStore(ram_budget_bytes=0)
    store.put(1, _features(1))
    store.put(2, _features(2))
    folder = store.spill_dir
    assert folder is not None and (folder / "1" / "dense.npy").is_file()
    store.close()
    assert not folder.exists() and len(store) == 0


def test_clear_forgets_everything_deletes_spill_files_and_keeps_the_store_usable(tmp_path):
    one = sum(v.nbytes for v in _features(0).values())
    store = FeatureStore(ram_budget_bytes=int(1.5 * one), spill_dir=str(tmp_path))
    for i in range(3):
        store.put(i, _features(i))
    assert store.num_spilled == 2
    store.clear()
    assert len(store) == 0 and store.get(0) is None and not any(tmp_path.iterdir())
    assert (store.ram_bytes, store.disk_bytes) == (0, 0)
    store.put(0, _features(5))
    store.put(1, _features(6))  # spills again into the same folder
    np.testing.assert_array_equal(store.get(0)["dense"], _features(5)["dense"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0"]


def test_feature_names_must_be_safe_file_names(tmp_path):
    store = FeatureStore(spill_dir=str(tmp_path))
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        store.put(1, {"../escape": np.zeros(3, np.float32)})
