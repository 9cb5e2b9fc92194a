"""The corrupt-map matrix: every way a saved map can be damaged or crafted is either refused
(open_map and load_map raise a one-line MapError naming the file, nothing on disk changes, a
session that tries to load it keeps its own map working) or, for one keyframe's folder,
loads the map while read_payload refuses that keyframe only."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from test_map_safety import tree_digest
from test_map_session import DIM, _add, _saved_map, _stage
from vpr_ros.map import (
    PAYLOAD_DIR,
    KeyframeMap,
    MapError,
    MapSession,
    MapStore,
    load_map,
    open_map,
    read_info,
    read_payload,
)
from vpr_ros.types import Keyframe

MODEL = "mobilenetv2"  # what the session's stage runs (a fake encoder, DIM-D)
N = 4


def _build(root: Path, model: str = MODEL, dim: int = DIM) -> None:
    rng = np.random.default_rng(7)
    kmap, store = KeyframeMap(dim, device="cpu"), MapStore(root, model)
    for i in range(N):
        d = rng.standard_normal(dim).astype(np.float32)
        kf_id = kmap.add(d / np.linalg.norm(d), stamp=float(i), pose=np.eye(4))
        image = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        local = {"tokens": rng.standard_normal((4, 3)).astype(np.float32)}
        store.write_payload(Keyframe(kf_id, float(i), d, image=image, pose=np.eye(4), local_features=local))
    store.save(kmap.snapshot())


def _snapshot(root: Path) -> Path:
    return root / read_info(root).snapshot


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _flip(file: Path) -> None:
    raw = bytearray(file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    file.write_bytes(bytes(raw))


def _pointer(root: Path, **fields) -> None:
    doc = json.loads((root / "map.json").read_text())
    (root / "map.json").write_text(json.dumps(dict(doc, **fields)))


def _raw_pointer(root: Path, field: str, text: str) -> None:
    """A map.json field written as raw JSON text (NaN, 1e400: what json.dumps will not write)."""
    doc = json.loads((root / "map.json").read_text())
    doc[field] = "@@"
    (root / "map.json").write_text(json.dumps(doc).replace('"@@"', text))


def _craft(root: Path, name: str, data: bytes) -> None:
    """Replace a snapshot file and its sha256 in map.json: a crafted, not a damaged, map."""
    (_snapshot(root) / name).write_bytes(data)
    doc = json.loads((root / "map.json").read_text())
    doc["files"][name] = hashlib.sha256(data).hexdigest()
    (root / "map.json").write_text(json.dumps(doc))


def _records(root: Path, edit) -> None:
    doc = json.loads((_snapshot(root) / "keyframes.json").read_text())
    edit(doc["keyframes"])
    _craft(
        root,
        "keyframes.json",
        json.dumps(doc).replace('"@nan"', "NaN").replace('"@inf"', "Infinity").encode(),
    )


def _index(root: Path, edit) -> None:
    index = faiss.read_index(str(_snapshot(root) / "index.faiss"))
    _craft(root, "index.faiss", faiss.serialize_index(edit(index)).tobytes())


def _l2(index):
    vectors = index.index.reconstruct_n(0, index.ntotal)
    l2 = faiss.IndexIDMap2(faiss.IndexFlatL2(index.d))
    l2.add_with_ids(vectors, faiss.vector_to_array(index.id_map))
    return l2


def _extra_id(index):
    index.add_with_ids(np.ones((1, index.d), np.float32) / np.sqrt(index.d), np.array([99], np.int64))
    return index


def _dropped_id(index):
    index.remove_ids(np.array([2], np.int64))
    return index


def _pending_duplicate(root: Path) -> None:
    _craft(root, "pending_ids.npy", _npy([1]))
    _craft(root, "pending.npy", _npy(np.eye(1, DIM), np.float32))


def _symlink_away(root: Path, name: str) -> None:
    target = root.parent / f"outside-{name}"
    shutil.move(root / name, target)
    (root / name).symlink_to(target)


def _pointer_outside(root: Path) -> None:
    shutil.copytree(_snapshot(root), root.parent / "x")
    _pointer(root, snapshot="../x")


def _pointer_file(root: Path, kind: str) -> None:
    (root / "map.json").unlink()
    if kind == "directory":
        (root / "map.json").mkdir()
    elif kind == "devnull":
        (root / "map.json").symlink_to("/dev/null")


def _snapshot_file(name: str, damage):
    return lambda root: damage(_snapshot(root) / name)


def _unlink(file: Path) -> None:
    file.unlink()


REFUSED = {  # case -> (damage, a word the message must hold)
    "map.json truncated": (lambda r: _truncate(r / "map.json"), "map.json"),
    "map.json byte-flipped": (lambda r: _flip(r / "map.json"), "map.json"),
    "map.json deleted": (lambda r: _pointer_file(r, "deleted"), "map.json"),
    "map.json a directory": (lambda r: _pointer_file(r, "directory"), "map.json"),
    "map.json -> /dev/null": (lambda r: _pointer_file(r, "devnull"), "map.json"),
    **{
        f"{name} {how}": (_snapshot_file(name, damage), name)
        for name in ("index.faiss", "keyframes.json", "pending.npy", "pending_ids.npy")
        for how, damage in (("truncated", _truncate), ("byte-flipped", _flip), ("deleted", _unlink))
    },
    "no files checksums": (lambda r: _pointer(r, files=None), "map.json"),
    "three checksums": (lambda r: _pointer(r, files={"index.faiss": "0" * 64}), "map.json"),
    "snapshot ../x": (_pointer_outside, "map.json"),
    "snapshot symlinked": (lambda r: _symlink_away(r, read_info(r).snapshot), "snapshot"),
    "keyframes/ symlinked": (lambda r: _symlink_away(r, PAYLOAD_DIR), PAYLOAD_DIR),
    "next_id 10**30": (lambda r: _pointer(r, next_id=10**30), "map.json"),
    "next_id 2**64": (lambda r: _pointer(r, next_id=2**64), "map.json"),
    "next_id -1": (lambda r: _pointer(r, next_id=-1), "map.json"),
    "next_id below the ids": (lambda r: _pointer(r, next_id=2), "map.json"),
    "next_id a float": (lambda r: _pointer(r, next_id=4.0), "map.json"),
    "num_keyframes huge": (lambda r: _pointer(r, num_keyframes=10**30), "map.json"),
    "num_keyframes wrong": (lambda r: _pointer(r, num_keyframes=3), "map.json"),
    "descriptor_dim 1e400": (lambda r: _raw_pointer(r, "descriptor_dim", "1e400"), "map.json"),
    "descriptor_dim 10**9": (lambda r: _pointer(r, descriptor_dim=10**9), "map.json"),
    "saved_at NaN": (lambda r: _raw_pointer(r, "saved_at", "NaN"), "map.json"),
    "model a number": (lambda r: _pointer(r, model=5), "map.json"),
    "stamp NaN": (lambda r: _records(r, lambda ks: ks[1].update(stamp="@nan")), "keyframes.json"),
    "id 10**30": (lambda r: _records(r, lambda ks: ks[1].update(id=10**30)), "keyframes.json"),
    "id a string": (lambda r: _records(r, lambda ks: ks[1].update(id="1")), "keyframes.json"),
    "pose Infinity": (
        lambda r: _records(r, lambda ks: ks[1]["pose"].__setitem__(3, "@inf")),
        "keyframes.json",
    ),
    "pose 3 numbers": (lambda r: _records(r, lambda ks: ks[1].update(pose=[1, 2, 3])), "keyframes.json"),
    "repeated record": (lambda r: _records(r, lambda ks: ks.__setitem__(3, ks[0])), "keyframes.json"),
    "L2 index": (lambda r: _index(r, _l2), "index.faiss"),
    "index id without a record": (lambda r: _index(r, _extra_id), "index.faiss"),
    "record without an index entry": (lambda r: _index(r, _dropped_id), "index.faiss"),
    "pending id of an indexed record": (_pending_duplicate, "pending_ids.npy"),
    "pending float ids": (lambda r: _craft(r, "pending_ids.npy", _npy([], np.float64)), "pending_ids.npy"),
}


def _npy(values, dtype=np.int64) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values, dtype))
    return buffer.getvalue()


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_damaged_or_crafted_map_is_refused_and_left_as_it_was(tmp_path, case):
    damage, word = REFUSED[case]
    root = tmp_path / "map"
    _build(root)
    damage(root)
    before = tree_digest(tmp_path)
    for attempt in (lambda: load_map(root, MODEL, DIM), lambda: open_map(root, MODEL, DIM, device="cpu")):
        with pytest.raises(MapError) as err:
            attempt()
        message = str(err.value)
        assert "\n" not in message and word in message, message

    home = tmp_path / "home"
    _saved_map(home, range(2))
    session = MapSession(str(home))
    stage = _stage()
    session.open(stage)
    with pytest.raises(MapError):
        session.load(str(root))
    assert session.map_path == str(home) and sorted(stage.map.records) == [0, 1]
    assert _add(session, [9]) == [2]  # the previous map and its writer work on
    session.save()
    assert sorted(load_map(home, MODEL, DIM)[0].records) == [0, 1, 2]
    assert read_payload(home, 2) is not None
    session.close()
    assert {k: v for k, v in tree_digest(tmp_path).items() if not k.startswith("home")} == before


def test_another_model_or_dimension_is_refused(tmp_path):
    _build(tmp_path / "other-model", model="image")
    _build(tmp_path / "other-dim", dim=16)
    before = tree_digest(tmp_path)
    for root in (tmp_path / "other-model", tmp_path / "other-dim"):
        with pytest.raises(MapError, match="cannot be compared"):
            open_map(root, MODEL, DIM, device="cpu")
    assert tree_digest(tmp_path) == before


PAYLOAD = {  # case -> damage of keyframe 2's folder; read_payload(2) raises or gives None
    f"{name} {how}": (name, damage)
    for name in ("meta.json", "image.png", "local.tokens.npy")
    for how, damage in (("truncated", _truncate), ("byte-flipped", _flip), ("deleted", _unlink))
}


@pytest.mark.parametrize("case", sorted(PAYLOAD))
def test_a_damaged_keyframe_folder_costs_that_keyframe_only(tmp_path, case):
    name, damage = PAYLOAD[case]
    _build(tmp_path)
    damage(tmp_path / PAYLOAD_DIR / f"{2:012d}" / name)
    before = tree_digest(tmp_path)
    kmap, _, _ = open_map(tmp_path, MODEL, DIM, device="cpu")
    assert len(kmap) == N
    try:
        assert read_payload(tmp_path, 2) is None
    except MapError as exc:
        assert "\n" not in str(exc) and f"{2:012d}" in str(exc)
    for kf_id in (0, 1, 3):
        assert read_payload(tmp_path, kf_id).image.shape == (24, 32, 3)
    assert tree_digest(tmp_path) == before
