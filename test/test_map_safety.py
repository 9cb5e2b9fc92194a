"""Map data-loss regressions: saves racing the keyframe writer, maps without map.json,
half-applied loads, save paths outside the map, and what a "saved" MapInfo announces."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from test_map_session import DIM, _add, _saved_map, _stage
from vpr_ros.map import (
    PAYLOAD_DIR,
    KeyframeMap,
    MapError,
    MapSession,
    MapStore,
    PayloadWriter,
    load_map,
    open_map,
    read_info,
    read_payload,
)
from vpr_ros.types import Keyframe


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under root (not following symlinks): file hashes, link targets, dirs."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + str(p.readlink())
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _keyframe(kf_id: int, rng) -> Keyframe:
    return Keyframe(
        id=kf_id,
        stamp=float(kf_id),
        descriptor=np.zeros(0, np.float32),
        image=rng.integers(0, 255, (96, 128, 3), dtype=np.uint8),
        camera_matrix=np.eye(3),
        depth=rng.random((96, 128), dtype=np.float32),
        pose=np.eye(4),
        local_features={"tokens": rng.standard_normal((16, 8)).astype(np.float32)},
    )


def complete(root: Path, kf_id: int) -> bool:
    folder = root / PAYLOAD_DIR / f"{kf_id:012d}"
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    names = {"meta.json", "image.png"} if meta.get("image") else {"meta.json"}
    names |= {"depth.npy"} if meta.get("depth") else set()
    names |= {f"local.{n}.npy" for n in meta.get("local_features", [])}
    return all((folder / n).is_file() for n in names)


# -- 1. a save never deletes a keyframe folder the writer is still writing --------------------
def test_saves_racing_the_payload_writer_never_lose_a_keyframe_folder(tmp_path):
    rng = np.random.default_rng(0)
    kmap = KeyframeMap(DIM, device="cpu")
    store = MapStore(tmp_path, "m")
    errors = []
    writer = PayloadWriter(store, on_error=lambda kf_id, exc: errors.append(f"{kf_id}: {exc}"))
    lock, stop, saved = threading.Lock(), threading.Event(), []

    def saver():
        while not stop.is_set():
            with lock:
                snap = kmap.snapshot()
            writer.flush()  # as MapSession.save: the snapshot's keyframes are on disk
            saved.append(store.save(snap))
            time.sleep(0.002)

    thread = threading.Thread(target=saver)
    thread.start()
    try:
        for _ in range(150):
            d = rng.standard_normal(DIM).astype(np.float32)
            with lock:
                kf_id = kmap.add(d / np.linalg.norm(d), stamp=0.0)
                writer.submit(_keyframe(kf_id, rng))
            time.sleep(0.01)  # 100 keyframes a second
    finally:
        stop.set()
        thread.join()
    writer.close()
    store.save(kmap.snapshot())
    assert errors == [] and writer.errors == 0
    assert len(saved) >= 10, f"only {len(saved)} saves raced the writer"
    missing = [i for i in range(150) if not complete(tmp_path, i)]
    assert missing == [], f"{len(missing)} keyframes lack a complete folder: {missing[:10]}"
    assert len(load_map(tmp_path, "m", DIM)[0]) == 150


def test_a_folder_that_lost_a_file_before_its_rename_is_never_put_in_place(tmp_path, monkeypatch):
    from vpr_ros.map import payloads

    real = payloads.write_npy

    def vanishing(path, array, fsync=True):  # the image goes while the arrays are written
        real(path, array, fsync)
        (path.parent / "image.png").unlink(missing_ok=True)

    monkeypatch.setattr(payloads, "write_npy", vanishing)
    with pytest.raises(MapError, match="incomplete"):
        MapStore(tmp_path, "m").write_payload(_keyframe(0, np.random.default_rng(0)))
    assert not (tmp_path / PAYLOAD_DIR / f"{0:012d}").exists()
    assert list((tmp_path / PAYLOAD_DIR).iterdir()) == []  # its temporary folder is gone too


# -- 2. keyframe data without a readable map.json is refused, never started over -------------
@pytest.mark.parametrize("damage", ["missing", "directory", "devnull", "symlink"])
def test_map_data_without_a_regular_map_json_is_refused_and_kept(tmp_path, damage):
    root = tmp_path / "map"
    _saved_map(root, range(3))
    pointer = root / "map.json"
    if damage == "missing":
        pointer.unlink()
    elif damage == "directory":
        pointer.unlink()
        pointer.mkdir()
    elif damage == "devnull":
        pointer.unlink()
        pointer.symlink_to("/dev/null")
    else:
        (tmp_path / "elsewhere.json").write_bytes(pointer.read_bytes())
        pointer.unlink()
        pointer.symlink_to(tmp_path / "elsewhere.json")
    before = tree_digest(root)
    with pytest.raises(MapError) as err:
        open_map(root, "mobilenetv2", DIM, device="cpu")
    assert "\n" not in str(err.value) and "map.json" in str(err.value)
    session = MapSession(str(root))
    with pytest.raises(MapError):
        session.open(_stage())
    assert session.stage is None and session.save_on_exit() is None
    assert tree_digest(root) == before


def test_a_new_map_writes_its_map_json_before_any_keyframe_folder(tmp_path):
    session = MapSession(str(tmp_path / "map"))
    session.open(_stage())
    assert read_info(tmp_path / "map").num_keyframes == 0
    _add(session, range(2))
    session.payloads.flush()
    session.close()  # "crash": nothing saved after the start
    reopened = MapSession(str(tmp_path / "map"))
    reopened.open(_stage())  # not refused: the folders are past the saved next id
    assert len(reopened.stage.map) == 0 and not any((tmp_path / "map" / PAYLOAD_DIR).iterdir())
    reopened.close()


def test_an_empty_first_snapshot_left_by_a_crash_does_not_block_a_new_map(tmp_path):
    kmap = KeyframeMap(DIM, device="cpu")
    MapStore(tmp_path, "mobilenetv2").save(kmap.snapshot())
    (tmp_path / "map.json").unlink()  # killed between the snapshot rename and the commit
    kmap2, _, info = open_map(tmp_path, "mobilenetv2", DIM, device="cpu")
    assert info is None and len(kmap2) == 0 and read_info(tmp_path) is not None


def test_cleaning_up_after_a_save_never_follows_a_symlinked_keyframes_folder(tmp_path):
    root, outside = tmp_path / "map", tmp_path / "outside"
    _saved_map(root, range(3))
    (root / PAYLOAD_DIR).rename(outside)
    (root / PAYLOAD_DIR).symlink_to(outside)
    (root / "snapshot-000099-abcdef").symlink_to(outside)  # an old-snapshot name, as a link
    before = tree_digest(outside)
    kmap = KeyframeMap(DIM, device="cpu")
    for _ in range(5):
        kmap.reserve_id()  # a reset map: keyframes 0-2 are no longer named, so would go
    store = MapStore(root, "mobilenetv2")
    store.save(kmap.snapshot())
    store.discard_unsaved_payloads(0)
    assert tree_digest(outside) == before
    assert not (root / "snapshot-000099-abcdef").exists()  # only the link went


# -- 3. a load is validated completely before anything changes --------------------------------
@pytest.mark.parametrize(
    "field,value",
    [
        ("next_id", 10**30),
        ("next_id", -1),
        ("num_keyframes", 2**63),
        ("descriptor_dim", 10**9),
        ("next_id", 1.5),
        ("next_id", True),
        ("saved_at", "soon"),
        ("next_id", 2),
    ],
)
def test_a_bad_number_in_map_json_is_refused_and_the_session_keeps_its_map(tmp_path, field, value):
    home, other = tmp_path / "home", tmp_path / "other"
    _saved_map(other, range(3))
    doc = json.loads((other / "map.json").read_text())
    (other / "map.json").write_text(json.dumps(dict(doc, **{field: value})))
    session = MapSession(str(home))
    stage = _stage()
    session.open(stage)
    _add(session, range(10, 12))
    kmap, store, writer, ident = stage.map, session.store, session.payloads, session.session
    with pytest.raises(MapError) as err:
        session.load(str(other))
    assert "\n" not in str(err.value) and "map.json" in str(err.value)
    assert (stage.map, session.store, session.payloads, session.session) == (kmap, store, writer, ident)
    assert session.map_path == str(home)
    assert _add(session, [20]) == [2]  # the previous map works on, its writer too
    session.save()
    assert sorted(load_map(home, "mobilenetv2", DIM)[0].records) == [0, 1, 2]
    assert all(read_payload(home, i) is not None for i in range(3))
    session.close()


def test_a_load_that_fails_after_validation_changes_nothing(tmp_path, monkeypatch):
    from vpr_ros.map import session as session_module

    home, other = tmp_path / "home", tmp_path / "other"
    _saved_map(other, range(3))
    session = MapSession(str(home))
    stage = _stage()
    session.open(stage)
    _add(session, range(10, 12))
    kmap, store, writer, ident = stage.map, session.store, session.payloads, session.session

    def no_thread(*args, **kwargs):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(session_module, "PayloadWriter", no_thread)
    with pytest.raises(RuntimeError, match="new thread"):
        session.load(str(other))
    assert (stage.map, session.store, session.payloads, session.session) == (kmap, store, writer, ident)
    assert _add(session, [20]) == [2]
    session.payloads.flush()
    assert read_payload(home, 2) is not None  # the old writer still writes
    session.close()


# -- 5. a save to another path only writes a new directory or our own copy --------------------
def test_save_to_another_path_refuses_relative_foreign_and_unrelated_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    session = MapSession(str(tmp_path / "home"))
    session.open(_stage())
    _add(session, range(2))
    _saved_map(tmp_path / "robot2", range(5, 8))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "snapshot-000001-abc").write_text("not ours")
    (tmp_path / "photos" / ".tmp-x").write_text("not ours either")
    guarded = {p: tree_digest(tmp_path / p) for p in ("robot2", "photos")}
    for path, reason in [
        ("rel/map", "absolute"),
        (str(tmp_path / "a" / ".." / "b"), "'..'"),
        (str(tmp_path / "robot2"), "another map"),
        (str(tmp_path / "photos"), "not empty"),
    ]:
        with pytest.raises(MapError, match=reason):
            session.save(path)
    assert {p: tree_digest(tmp_path / p) for p in guarded} == guarded
    assert not (tmp_path / "rel").exists() and session.counts["map_save_failures"] == 4

    (tmp_path / "empty").mkdir()
    assert session.save(str(tmp_path / "empty"))[1] == 2
    assert session.save(str(tmp_path / "new" / "copy"))[1] == 2
    _add(session, [3])
    assert session.save(str(tmp_path / "new" / "copy"))[1] == 3  # our own copy again
    assert sorted(load_map(tmp_path / "new" / "copy", "mobilenetv2", DIM)[0].records) == [0, 1, 2]
    session.close()


# -- 6. a "saved" MapInfo announces what was saved, not the live map --------------------------
def test_saved_info_announces_the_saved_snapshot(tmp_path, monkeypatch):
    session = MapSession(str(tmp_path))
    session.open(_stage())
    _add(session, range(3))
    real = session.store.save

    def slow_save(snap, **kwargs):  # keyframes arrive while the snapshot is written
        info = real(snap, **kwargs)
        _add(session, [40, 41])
        return info

    monkeypatch.setattr(session.store, "save", slow_save)
    assert session.save()[1] == 3
    info = session.info("saved")
    assert (info.num_keyframes, info.next_id, info.event) == (3, 3, "saved")
    live = session.info("activated")
    assert (live.num_keyframes, live.next_id) == (5, 5)
    session.close()
