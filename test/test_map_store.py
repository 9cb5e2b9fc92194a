"""The saved keyframe map: round trips, validation on load, and crash safety of saves."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from vpr_ros.map import (
    PAYLOAD_DIR,
    KeyframeMap,
    MapError,
    MapMismatchError,
    MapStore,
    load_map,
    open_map,
    read_info,
    read_payload,
    read_payload_pose,
)
from vpr_ros.types import Keyframe


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pose(i: int) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = [0.5 * i, 0.1 * i, 0.0]
    return pose


def _keyframe(kf_id: int, rng, with_depth=False) -> Keyframe:
    return Keyframe(
        id=kf_id,
        stamp=10.0 + kf_id,
        descriptor=np.zeros(0, np.float32),
        image=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
        camera_matrix=np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]),
        depth=rng.random((48, 64), dtype=np.float32) if with_depth else None,
        pose=_pose(kf_id),
        frame_id="cam",
        camera="front",
        local_features={"tokens": rng.standard_normal((7, 5)).astype(np.float32)},
    )


def _build(path, n, dim=16, seed=0, model="m", index_factory="Flat"):
    """A map of n keyframes saved at path, with payloads; returns (map, store, descriptors)."""
    rng = np.random.default_rng(seed)
    data = _unit(rng, n, dim)
    kmap = KeyframeMap(dim, index_factory, device="cpu", train_size=1000)
    store = MapStore(path, model)
    for i, d in enumerate(data):
        kf_id = kmap.add(d, stamp=10.0 + i, frame_id="cam", camera="front", pose=_pose(i))
        store.write_payload(_keyframe(kf_id, rng, with_depth=i % 2 == 0))
    store.save(kmap.snapshot())
    return kmap, store, data


def test_round_trip_keeps_records_ids_and_search_results(tmp_path):
    kmap, _, data = _build(tmp_path / "map", 30)
    loaded, info = load_map(tmp_path / "map", model="m", descriptor_dim=16)
    assert (info.num_keyframes, info.next_id, info.model, info.descriptor_dim) == (30, 30, "m", 16)
    assert len(loaded) == 30 and loaded.next_id == 30
    for kf_id in (0, 7, 29):
        a, b = kmap.records[kf_id], loaded.records[kf_id]
        assert (a.stamp, a.frame_id, a.camera) == (b.stamp, b.frame_id, b.camera)
        np.testing.assert_array_equal(a.pose, b.pose)
    for q in data[::5]:
        expected = [(c.id, round(c.similarity, 5)) for c in kmap.search(q, 5)]
        assert [(c.id, round(c.similarity, 5)) for c in loaded.search(q, 5)] == expected
    # A restarted node continues the ids.
    assert loaded.add(data[0], stamp=99.0) == 30


def test_untrained_ivf_map_keeps_its_pending_descriptors(tmp_path):
    rng = np.random.default_rng(3)
    data = _unit(rng, 12, 8)
    kmap = KeyframeMap(8, "IVF4,Flat", device="cpu", train_size=100)
    for i, d in enumerate(data):
        kmap.add(d, stamp=float(i))
    MapStore(tmp_path, "m").save(kmap.snapshot())
    loaded, _ = load_map(tmp_path, "m", 8)
    assert not loaded.index.is_trained and len(loaded) == 12
    assert [c.id for c in loaded.search(data[4], 3)] == [c.id for c in kmap.search(data[4], 3)]


def test_payload_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(5)
    store = MapStore(tmp_path, "m")
    kf = _keyframe(3, rng, with_depth=True)
    store.write_payload(kf)
    back = read_payload(tmp_path, 3)
    np.testing.assert_array_equal(back.image, kf.image)  # PNG: lossless
    np.testing.assert_array_equal(back.depth, kf.depth)
    np.testing.assert_array_equal(back.camera_matrix, kf.camera_matrix)
    np.testing.assert_array_equal(back.pose, kf.pose)
    np.testing.assert_array_equal(back.local_features["tokens"], kf.local_features["tokens"])
    assert isinstance(back.local_features["tokens"], np.memmap)  # not read into RAM
    assert (back.stamp, back.frame_id, back.camera) == (kf.stamp, kf.frame_id, kf.camera)
    np.testing.assert_array_equal(read_payload_pose(tmp_path, 3), kf.pose)
    assert read_payload(tmp_path, 4) is None and read_payload_pose(tmp_path, 4) is None


def test_map_of_another_model_or_size_is_refused_with_a_clear_error(tmp_path):
    _build(tmp_path, 3, dim=16, model="image")
    with pytest.raises(MapMismatchError) as err:
        load_map(tmp_path, model="mobilenetv2", descriptor_dim=1280)
    message = str(err.value)
    assert "'image'" in message and "'mobilenetv2'" in message and "16-D" in message and "1280-D" in message
    with pytest.raises(MapMismatchError, match="16-D descriptors .this model makes 32-D"):
        load_map(tmp_path, model="image", descriptor_dim=32)
    with pytest.raises(MapMismatchError):
        open_map(tmp_path, "mobilenetv2", 16)


def test_damaged_maps_are_refused(tmp_path):
    _build(tmp_path, 5)
    info = read_info(tmp_path)
    index_file = tmp_path / info.snapshot / "index.faiss"
    raw = bytearray(index_file.read_bytes())
    raw[-1] ^= 0xFF
    index_file.write_bytes(bytes(raw))
    with pytest.raises(MapError, match="corrupt"):
        load_map(tmp_path)

    pointer = json.loads((tmp_path / "map.json").read_text())
    (tmp_path / "map.json").write_text(json.dumps(dict(pointer, format_version=99)))
    with pytest.raises(MapError, match="format version 99"):
        load_map(tmp_path)

    (tmp_path / "map.json").write_text(json.dumps(dict(pointer, snapshot="snapshot-000099-abcdef")))
    with pytest.raises(MapError, match="does not exist"):
        load_map(tmp_path)

    (tmp_path / "map.json").write_text("{not json")
    with pytest.raises(MapError, match="unreadable"):
        open_map(tmp_path, "m", 16)  # a node must not start over a damaged map
    with pytest.raises(MapError, match="no saved map"):
        load_map(tmp_path / "nowhere")


def test_records_that_disagree_with_the_index_are_refused(tmp_path):
    _build(tmp_path, 4)
    info = read_info(tmp_path)
    records = tmp_path / info.snapshot / "keyframes.json"
    doc = json.loads(records.read_text())
    doc["keyframes"] = doc["keyframes"][:3]
    records.write_text(json.dumps(doc))
    pointer = json.loads((tmp_path / "map.json").read_text())  # a crafted map: checksums agree
    pointer["files"]["keyframes.json"] = hashlib.sha256(records.read_bytes()).hexdigest()
    (tmp_path / "map.json").write_text(json.dumps(dict(pointer, num_keyframes=3)))
    with pytest.raises(MapError, match=r"inconsistent: .*ids without a record \[3\]"):
        load_map(tmp_path)


def test_reset_and_save_removes_old_keyframe_data_but_ids_keep_counting(tmp_path):
    kmap, store, data = _build(tmp_path, 6)
    kmap.clear()
    assert len(kmap) == 0 and kmap.add(data[0], stamp=1.0) == 6
    store.write_payload(_keyframe(6, np.random.default_rng(0)))
    store.save(kmap.snapshot())
    folders = sorted(p.name for p in (tmp_path / PAYLOAD_DIR).iterdir())
    assert folders == ["000000000006"]
    loaded, info = load_map(tmp_path)
    assert sorted(loaded.records) == [6] and info.next_id == 7
    snapshots = [p.name for p in tmp_path.iterdir() if p.name.startswith("snapshot-")]
    assert snapshots == [info.snapshot]  # older snapshots go once the new one is committed


def test_keyframes_written_after_the_last_save_are_discarded_on_open(tmp_path):
    kmap, store, data = _build(tmp_path, 4)
    for i in range(2):  # added, payload written, then the process died before saving
        store.write_payload(_keyframe(kmap.add(data[i], stamp=50.0 + i), np.random.default_rng(i)))
    assert len(list((tmp_path / PAYLOAD_DIR).iterdir())) == 6
    reopened, _, info = open_map(tmp_path, "m", 16)
    assert info.next_id == 4 and len(reopened) == 4
    assert sorted(p.name for p in (tmp_path / PAYLOAD_DIR).iterdir())[-1] == "000000000003"


def test_save_to_another_directory_is_a_complete_copy(tmp_path):
    kmap, store, _ = _build(tmp_path / "a", 5)
    MapStore(tmp_path / "b", "m", map_id=store.map_id).save(kmap.snapshot(), payload_source=tmp_path / "a")
    copy, info = load_map(tmp_path / "b", "m", 16)
    assert len(copy) == 5 and info.map_id == store.map_id
    for kf_id in range(5):
        np.testing.assert_array_equal(
            read_payload(tmp_path / "b", kf_id).image, read_payload(tmp_path / "a", kf_id).image
        )


# -- crash safety ------------------------------------------------------------------------------
SAVER = textwrap.dedent(
    """
    import sys, numpy as np
    from vpr_ros.map import open_map
    from vpr_ros.types import Keyframe

    path, log, bulk = sys.argv[1], open(sys.argv[2], "a", buffering=1), int(sys.argv[3])
    kmap, store, info = open_map(path, "m", 512)
    rng = np.random.default_rng(len(kmap))
    if len(kmap) == 0:  # a large map (40 MB index) makes each save long enough to be hit
        data = rng.standard_normal((bulk, 512)).astype(np.float32)
        for d in data / np.linalg.norm(data, axis=1, keepdims=True):
            kmap.add(d, stamp=0.0)
    while True:
        for _ in range(3):  # new keyframes, each with its data folder
            d = rng.standard_normal(512).astype(np.float32)
            kf_id = kmap.add(d / np.linalg.norm(d), stamp=float(kmap.next_id))
            image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
            store.write_payload(Keyframe(kf_id, float(kf_id), d, image=image))
        snap = kmap.snapshot()
        log.write(f"begin {snap.num_keyframes}\\n")
        store.save(snap)
        log.write(f"end {snap.num_keyframes}\\n")
    """
)
BULK = 12000


def test_sigkill_at_random_moments_never_loses_the_previous_save(tmp_path):
    """A process that saves over and over is killed at random moments, 20 times. After every
    kill the map must load, hold exactly the keyframes of the last save that committed, and
    have a data folder for each keyframe that had one; the next run carries on from it."""
    path, log = tmp_path / "map", tmp_path / "saves.log"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rnd = random.Random(1234)
    kills_mid_save, previous = 0, 0
    for _ in range(20):
        log.write_text("")
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(log), str(BULK)], env=env)
        # Wait for the first save to begin, then kill somewhere in the next few saves.
        deadline = time.monotonic() + 30
        while "begin" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "saver died on its own"
        time.sleep(rnd.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        events = log.read_text().split()
        begun = [int(n) for kind, n in zip(events[::2], events[1::2], strict=True) if kind == "begin"]
        ended = [int(n) for kind, n in zip(events[::2], events[1::2], strict=True) if kind == "end"]
        in_flight = begun[-1] if len(begun) > len(ended) else None
        kills_mid_save += in_flight is not None

        committed = ended[-1] if ended else previous
        if read_info(path) is None:  # killed inside the very first save: there is no map yet
            assert committed == 0
            continue
        kmap, info = load_map(path, "m", 512)  # raises if the kill left a broken map
        # The save in flight may have passed its commit point (map.json replaced) just before
        # the kill; anything else means a save was lost or a torn one was loaded.
        assert len(kmap) in {committed, in_flight}, (len(kmap), committed, in_flight)
        folders = {int(p.name) for p in (path / PAYLOAD_DIR).iterdir() if p.name.isdigit()}
        assert {i for i in kmap.records if i >= BULK} <= folders
        assert info.next_id == len(kmap)
        previous = len(kmap)
    # The test only means something if many kills landed inside a save.
    assert kills_mid_save >= 6, f"only {kills_mid_save} of 20 kills hit a save in progress"
    print(f"\n{kills_mid_save} of 20 SIGKILLs landed mid-save; final map {previous} keyframes")
