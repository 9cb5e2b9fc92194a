"""MapSession, the descriptor node's map without ROS: open, add, save, load, reset, info."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.config import PipelineConfig
from vpr_ros.map import PAYLOAD_DIR, MapError, MapMismatchError, MapSession, load_map, read_info, read_payload
from vpr_ros.models.registry import get_model_spec
from vpr_ros.pipeline import DescriptorStage
from vpr_ros.types import Frame

DIM = 8


class FakeEncoder:
    """Stands in for Encoder: a descriptor that depends only on the image, no model to load."""

    def __init__(self, dim: int = DIM):
        self.spec = get_model_spec("mobilenetv2")  # no local features: encode() is used
        self.input_size = self.spec.input.size
        self.descriptor_dim = dim
        self.device = "cpu"

    def encode(self, images):
        out = []
        for image in images:
            x = np.random.default_rng(int(image.sum())).standard_normal(self.descriptor_dim)
            out.append(x / np.linalg.norm(x))
        return np.asarray(out, np.float32)


class Log:
    """Collects what the session would log (an rclpy or logging logger in real use)."""

    def __init__(self):
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def warning(self, message):
        self.warnings.append(message)

    def error(self, message):
        self.errors.append(message)


def _stage(dim: int = DIM, **config) -> DescriptorStage:
    cfg = PipelineConfig(model="mobilenetv2", keyframe_min_period=0.0, map_device="cpu", **config)
    return DescriptorStage(cfg, encoder=FakeEncoder(dim), camera="front")


def _frame(i: int) -> Frame:
    image = np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    pose = np.eye(4)
    pose[0, 3] = float(i)
    return Frame(10.0 + i, image, "cam", np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]), None, pose)


def _add(session: MapSession, frames) -> list[int]:
    ids = []
    for i in frames:
        result, _ = session.process(_frame(i))
        ids.append(result.keyframe.id)
    return ids


def _saved_map(path, frames, dim: int = DIM) -> None:
    session = MapSession(str(path))
    session.open(_stage(dim))
    _add(session, frames)
    session.save()
    session.close()


def test_a_new_map_is_saved_and_reopened_with_its_keyframes(tmp_path):
    path = tmp_path / "map"
    session = MapSession(str(path))
    # Not upscaled: the payload compared below is the camera image itself.
    assert session.open(_stage(verification_upscale=False)) == f"new map at {path}"
    assert _add(session, range(3)) == [0, 1, 2]
    assert session.version == 3 and session.saved_version == 0

    directory, keyframes, seconds = session.save()
    assert (directory, keyframes) == (str(path), 3) and seconds >= 0
    assert session.saved_version == 3 and session.counts["map_saves"] == 1
    info = read_info(path)
    assert (info.num_keyframes, info.next_id, info.model, info.descriptor_dim) == (3, 3, "mobilenetv2", DIM)
    np.testing.assert_array_equal(read_payload(path, 1).image, _frame(1).image)  # flushed before the commit
    session.close()
    assert session.stage is None and session.payloads is None

    reopened = MapSession(str(path))
    stage = _stage()
    assert reopened.open(stage) == f"map {path}: 3 keyframes loaded, next id 3"
    assert sorted(stage.map.records) == [0, 1, 2]
    assert reopened.store.map_id == info.map_id
    assert _add(reopened, [3]) == [3]  # ids continue after the saved ones
    reopened.close()


def test_on_exit_and_periodic_saves_happen_only_when_something_is_unsaved(tmp_path):
    session = MapSession(str(tmp_path))
    session.open(_stage())
    assert read_info(tmp_path).num_keyframes == 0  # a new map is saved when it is opened
    assert session.save_if_changed() is None and session.save_on_exit() is None  # nothing added
    _add(session, [0])
    assert session.save_if_changed()[1] == 1
    assert session.save_on_exit() is None
    _add(session, [1])
    assert session.save_on_exit()[1] == 2
    assert session.counts["map_saves"] == 2
    session.close()
    assert session.save_on_exit() is None  # closed: nothing to save


def test_localisation_never_adds_or_saves(tmp_path):
    _saved_map(tmp_path, range(2))
    session = MapSession(str(tmp_path))
    stage = _stage(localization_only=True)
    session.open(stage)
    assert session.payloads is None
    assert _add(session, [5]) == [2]  # an id of its own, but not in the map
    assert len(stage.map) == 2 and session.version == 0
    assert session.save_on_exit() is None and session.save_if_changed() is None
    assert not (tmp_path / PAYLOAD_DIR / "000000000002").exists()
    session.close()


def test_a_map_in_memory_only_saves_only_to_a_given_path(tmp_path):
    session = MapSession("")
    assert session.open(_stage()) == "map in memory only"
    _add(session, range(2))
    assert session.store is None and session.save_on_exit() is None
    with pytest.raises(RuntimeError, match="map_path is empty"):
        session.save()
    directory, keyframes, _ = session.save(str(tmp_path / "copy"))
    assert (directory, keyframes) == (str(tmp_path / "copy"), 2)
    session.close()


def test_save_to_another_directory_is_a_copy_and_the_session_stays_home(tmp_path):
    home, copy = tmp_path / "home", tmp_path / "copy"
    session = MapSession(str(home))
    session.open(_stage())
    _add(session, range(3))
    session.save(str(copy))
    kmap, info = load_map(copy, "mobilenetv2", DIM)
    assert sorted(kmap.records) == [0, 1, 2] and info.map_id == session.store.map_id
    assert len(list((copy / PAYLOAD_DIR).iterdir())) == 3  # keyframe folders came along
    assert session.map_path == str(home) and session.saved_version == 0  # home is still unsaved
    assert session.save_on_exit()[0] == str(home)
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        session.save(str(tmp_path / "file" / "map"))  # cannot be a directory
    assert session.counts["map_save_failures"] == 1 and session.counts["map_saves"] == 2
    session.close()


def test_load_replaces_the_map_and_the_directory_it_works_in(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _saved_map(a, range(2))
    _saved_map(b, range(10, 13))
    session = MapSession(str(a))
    stage = _stage()
    session.open(stage)
    _add(session, [5])  # never saved: dropped by the load
    before = session.session

    assert session.load(str(b)) == (str(b), 3, 3)
    assert session.map_path == str(b) and session.store.root == b
    assert len(stage.map) == 3 and session.version == session.saved_version == 0
    assert session.session != before
    assert _add(session, [20]) == [3]
    session.payloads.flush()
    assert (b / PAYLOAD_DIR / "000000000003").is_dir()  # written into the new directory

    assert session.load() == (str(b), 3, 3)  # "" reloads map_path; the unsaved keyframe goes
    with pytest.raises(MapError, match="no saved map"):
        session.load(str(tmp_path / "nowhere"))
    _saved_map(tmp_path / "foreign", [0], dim=16)
    with pytest.raises(MapMismatchError, match="16-D"):
        session.load(str(tmp_path / "foreign"))
    assert session.map_path == str(b) and len(stage.map) == 3  # refused loads change nothing
    session.close()


def test_reset_empties_the_map_under_a_new_map_id_and_ids_keep_counting(tmp_path):
    session = MapSession(str(tmp_path))
    stage = _stage()
    session.open(stage)
    _add(session, range(2))
    session.save()
    map_id, before, version = session.store.map_id, session.session, session.version

    assert session.reset() == (2, 2)
    assert len(stage.map) == 0 and session.version == version + 1
    assert session.store.map_id != map_id and session.session != before
    assert session.save_if_changed()[1] == 0  # the reset is a change: the saved map is replaced
    info = read_info(tmp_path)
    assert (info.map_id, info.num_keyframes, info.next_id) == (session.store.map_id, 0, 2)
    assert _add(session, [7]) == [2]
    session.close()


def test_info_announces_the_map(tmp_path):
    session = MapSession(str(tmp_path))
    assert session.info("activated") is None  # nothing open
    session.open(_stage(index_factory="Flat"))
    _add(session, range(2))
    info = session.info("activated")
    assert info.session == session.session and len(info.session) == 32
    assert info.map_id == session.store.map_id and info.path == str(tmp_path.resolve())
    assert (info.model, info.descriptor_dim, info.index_factory) == ("mobilenetv2", DIM, "Flat")
    assert (info.num_keyframes, info.next_id, info.localization_only, info.event) == (
        2,
        2,
        False,
        "activated",
    )
    session.close()

    memory = MapSession("")
    memory.open(_stage())
    assert (memory.info("saved").map_id, memory.info("saved").path) == ("", "")
    memory.close()


def test_a_saved_index_factory_is_kept_with_a_warning(tmp_path):
    _saved_map(tmp_path, range(2))
    log = Log()
    session = MapSession(str(tmp_path), log=log)
    stage = _stage(index_factory="HNSW32")
    session.open(stage)
    assert stage.map.index_factory == "Flat"
    assert log.warnings == ["saved map uses index 'Flat', not 'HNSW32': keeping the saved index"]
    session.close()


def test_foreign_or_damaged_maps_are_refused_at_open(tmp_path):
    _saved_map(tmp_path, [0], dim=16)
    session = MapSession(str(tmp_path))
    with pytest.raises(MapMismatchError):
        session.open(_stage())
    assert session.stage is None and read_info(tmp_path).descriptor_dim == 16  # not overwritten
    damaged = tmp_path / "damaged"
    _saved_map(damaged, [0])
    (damaged / "map.json").write_text("{not json")
    with pytest.raises(MapError, match="unreadable"):
        MapSession(str(damaged)).open(_stage())


def test_failed_keyframe_writes_are_counted_and_logged(tmp_path):
    log = Log()
    session = MapSession(str(tmp_path), log=log)
    session.open(_stage())

    def full_disk(kf):
        raise OSError("No space left on device")

    session.store.write_payload = full_disk
    _add(session, [0])
    session.payloads.flush()
    assert session.counts["map_payload_errors"] == 1
    assert log.errors == [f"could not store keyframe 0 in {tmp_path}: No space left on device"]
    assert session.diagnostics()["map_payload_errors"] == 1
    session.close()


def test_without_an_open_map_calls_say_so(tmp_path):
    session = MapSession(str(tmp_path))
    assert session.process(_frame(0)) == (None, None)
    assert session.reset() is None
    with pytest.raises(RuntimeError, match="not active"):
        session.save()
    with pytest.raises(RuntimeError, match="not active"):
        session.load()
    assert session.diagnostics() == {
        "map_path": str(tmp_path),
        "map_saves": 0,
        "map_payload_queue": 0,
        "map_payload_errors": 0,
        "map_save_failures": 0,
    }


def test_diagnostics_report_the_map_and_the_last_save(tmp_path):
    session = MapSession(str(tmp_path))
    session.open(_stage())
    _add(session, range(3))
    session.save()
    values = session.diagnostics()
    assert (values["map_keyframes"], values["map_next_id"], values["map_saves"]) == (3, 3, 1)
    assert values["map_last_save_s"] >= 0 and values["map_seconds_since_save"] >= 0
    session.close()
