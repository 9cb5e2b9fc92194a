"""Recent-keyframe exclusion by path length (odometry) and by stationary runs (no odometry).

Map-level rules first (cheap, random descriptors), then the rendered world through the whole
pipeline (mobilenetv2 + geometric verification at the default parameters): a slow drive and
a stationary camera close no loop, a real revisit still does, and each rule switched off
lets the false closures back (so these tests can fail). Last, the verification view of a
small camera (``verification_upscale``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vpr_ros.keyframe_gate import KeyframeGate
from vpr_ros.map import KeyframeMap, KeyframeRecord
from vpr_ros.map.store import MapStore, load_map


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _at(x, y=0.0):
    pose = np.eye(4)
    pose[:2, 3] = x, y
    return pose


def _drive(kmap, xs, descriptors):
    for i, (x, d) in enumerate(zip(xs, descriptors, strict=True)):
        kmap.add(d, stamp=float(i), pose=None if x is None else _at(x))


def test_path_length_is_summed_keyframe_to_keyframe():
    kmap = KeyframeMap(8)
    rng = np.random.default_rng(0)
    # Out 3 m and back 3 m: straight-line distance 0, path 6 m; a keyframe without a pose
    # has no path length and the path goes on from the last pose.
    _drive(kmap, [0.0, 1.0, 3.0, None, 1.0, 0.0], _unit(rng, 6, 8))
    assert [kmap.records[i].path_length for i in range(6)] == [0.0, 1.0, 3.0, None, 5.0, 6.0]
    assert kmap.path_length_at(_at(0.0, 2.0)) == pytest.approx(8.0)
    assert kmap.path_length_at(None) is None
    assert kmap.path_length_at(np.full((4, 4), np.nan)) is None
    kmap.clear()
    assert kmap.path_length_at(_at(5.0)) == 0.0  # a cleared map starts a new path


def test_keyframes_within_the_distance_are_never_candidates():
    rng = np.random.default_rng(1)
    data = _unit(rng, 40, 16)
    kmap = KeyframeMap(16)
    _drive(kmap, [0.5 * i for i in range(40)], data)  # 0.5 m apart: 19.5 m of path
    query_path = kmap.path_length_at(_at(20.0))
    res = kmap.search(data[39], k=40, exclude_distance_m=5.0, query_path_length=query_path)
    # 20 - 5 = 15 m: keyframes up to 15.0 m (id 30) are allowed, the 9 after it are not.
    assert sorted(c.id for c in res) == list(range(31))
    # Without a query path length (no odometry) the rule does not apply.
    assert len(kmap.search(data[39], k=40, exclude_distance_m=5.0)) == 40


def test_a_revisit_after_a_loop_is_a_candidate_where_straight_distance_is_not_path():
    rng = np.random.default_rng(2)
    place = _unit(rng, 1, 16)[0]
    others = _unit(rng, 30, 16)
    kmap = KeyframeMap(16)
    kmap.add(place, stamp=0.0, pose=_at(0.0))
    # Around a 4 x 4 m square (16 m of path) back to the start.
    corners = [(4.0 * min(t, 1), 0.0) for t in np.linspace(0, 1, 8)]
    corners += [(4.0, 4.0 * t) for t in np.linspace(0, 1, 8)[1:]]
    corners += [(4.0 * (1 - t), 4.0) for t in np.linspace(0, 1, 8)[1:]]
    corners += [(0.0, 4.0 * (1 - t)) for t in np.linspace(0, 1, 8)[1:]]
    for i, (x, y) in enumerate(corners[1:], start=1):
        kmap.add(others[i % 30], stamp=float(i), pose=_at(x, y))
    query_path = kmap.path_length_at(_at(0.0, 0.0))
    assert query_path == pytest.approx(16.0)
    hits = kmap.search(place, k=1, exclude_distance_m=15.0, query_path_length=query_path)
    assert hits[0].id == 0
    assert kmap.search(place, k=1, exclude_distance_m=16.5, query_path_length=query_path) == []


def test_the_cut_is_exact_past_many_near_duplicates():
    # 2000 keyframes of a stopped robot look exactly like the query: the search asks for
    # enough to get k older ones in one go (no doubling through the whole map).
    rng = np.random.default_rng(3)
    old = _unit(rng, 50, 8)
    query = _unit(rng, 1, 8)[0]
    kmap = KeyframeMap(8)
    _drive(kmap, [float(i) for i in range(50)], old)
    for i in range(2000):
        kmap.add(query, stamp=50.0 + i, pose=_at(49.0))
    calls = []
    raw = kmap._raw_search
    kmap._raw_search = lambda x, k: calls.append(k) or raw(x, k)
    res = kmap.search(query, k=3, exclude_distance_m=10.0, query_path_length=kmap.path_length_at(_at(49.0)))
    assert len(res) == 3 and all(c.id < 40 for c in res)
    assert len(calls) == 1
    res = kmap.search(query, k=3, exclude_from_id=50)  # a stationary run from id 50 on
    assert len(res) == 3 and all(c.id < 50 for c in res)


def test_path_length_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(4)
    kmap = KeyframeMap(8, device="cpu")
    _drive(kmap, [0.0, 2.0, None, 5.0], _unit(rng, 4, 8))
    MapStore(tmp_path, "m").save(kmap.snapshot())
    loaded, _ = load_map(tmp_path, model="m", descriptor_dim=8)
    assert [loaded.records[i].path_length for i in range(4)] == [0.0, 2.0, None, 5.0]
    # The path goes on from the saved one (a node restarted mid-drive keeps its window).
    assert loaded.path_length_at(_at(6.0)) == pytest.approx(6.0)
    res = loaded.search(_unit(rng, 1, 8)[0], k=4, exclude_distance_m=4.5, query_path_length=6.0)
    assert sorted(c.id for c in res) == [0]  # 2.0 m is within 4.5 m of 6.0: id 1 on are cut


def test_maps_written_without_path_lengths_fall_back_to_the_other_rules():
    rng = np.random.default_rng(5)
    data = _unit(rng, 10, 8)
    kmap = KeyframeMap(8)
    _drive(kmap, [float(i) for i in range(10)], data)
    snap = kmap.snapshot()
    legacy = []
    for r in snap.records:
        d = r.to_dict()
        del d["path_length"]
        legacy.append(KeyframeRecord.from_dict(d))
    snap.records = legacy
    old = KeyframeMap.restore(snap)
    assert all(r.path_length is None for r in old.records.values())
    res = old.search(data[9], k=10, exclude_recent=2, exclude_distance_m=100.0, query_path_length=10.0)
    assert sorted(c.id for c in res) == list(range(8))  # only the keyframe rule applied
    assert old.path_length_at(_at(3.0)) == 0.0  # new keyframes start a path of their own


def test_bad_path_lengths_are_refused():
    base = {"id": 1, "stamp": 1.0, "pose": None}
    for bad in (-1.0, "3", True, float("nan")):
        with pytest.raises(ValueError, match="path_length"):
            KeyframeRecord.from_dict({**base, "path_length": bad})
    kmap = KeyframeMap(8)
    _drive(kmap, [0.0, 1.0, 2.0], _unit(np.random.default_rng(6), 3, 8))
    snap = kmap.snapshot()
    snap.records[2].path_length = 0.5  # goes down: the bisection would be wrong
    with pytest.raises(ValueError, match="keyframe 2 path_length 0.5 is below"):
        KeyframeMap.restore(snap)
    assert json.loads(json.dumps(kmap.records[1].to_dict()))["path_length"] == 1.0


def test_stationary_runs_chain_until_the_view_changes():
    gate = KeyframeGate(stationary_similarity=0.9)
    a = np.array([1.0, 0.0], np.float32)
    near = np.array([0.95, np.sqrt(1 - 0.95**2)], np.float32)  # 0.95 to a
    far = np.array([0.0, 1.0], np.float32)
    assert gate.stationary_run(a) is None  # nothing before it
    gate.keyframe_added(10, a, None)
    assert gate.stationary_run(near) == 10
    gate.keyframe_added(11, near, 10)
    assert gate.stationary_run(near) == 10  # chained: still the run that began at 10
    assert gate.stationary_run(far) is None
    gate.keyframe_added(12, far, None)
    assert gate.stationary_run(far) == 12
    gate.reset()  # a loaded or reset map: runs start afresh
    assert gate.stationary_run(far) is None
    off = KeyframeGate()  # stationary_similarity 1: off
    off.keyframe_added(0, a, None)
    assert off.stationary_run(a) is None


# -- the rendered world through the whole pipeline ------------------------------------------------

PERIOD_S = 0.5  # one keyframe per frame at keyframe_min_period 0.5
# Small renders keep these tests quick; 3 m along a corridor needs the full size to verify.
SMALL, FULL = (320, 240), (640, 480)


@pytest.fixture(scope="module")
def encoder():
    from vpr_ros.encoder import Encoder
    from vpr_ros.evaluation.compare import CachingEncoder

    return CachingEncoder(Encoder("mobilenetv2", device="cpu"))  # each sequence is run several times


def _centreline(arc_lengths, size, noise=0.0):
    """Camera images and poses along the corridor ring's centreline (the default building)."""
    from vpr_ros.world import Ring, base_T_camera, make_building, make_camera, render
    from vpr_ros.world.trajectory import yaw_pose

    scene = make_building()
    width, outer = scene.params["corridor_width"], scene.params["outer_size"]
    ring = Ring(outer[0] / 2 - width / 2, outer[1] / 2 - width / 2)
    camera, mount = make_camera("", *size), base_T_camera()
    rng = np.random.default_rng(0)
    images, poses, rendered = [], [], {}
    for s in arc_lengths:
        x, y, heading, _ = ring.at(s)
        pose = yaw_pose(x, y, heading) @ mount
        if s not in rendered:
            rendered[s] = render(scene, camera, pose)[0]
        rgb = rendered[s]
        if noise:  # sensor noise: consecutive images of a stopped camera are never identical
            rgb = np.clip(rgb + rng.normal(0.0, noise, rgb.shape), 0, 255).astype(np.uint8)
        images.append(rgb)
        poses.append(pose)
    return images, poses, camera.K


def _closures(encoder, images, poses, K, with_odometry, **params):
    """(query frame, match frame) of every accepted closure at the default parameters but ``params``."""
    from vpr_ros.config import PipelineConfig
    from vpr_ros.pipeline import LoopClosurePipeline
    from vpr_ros.types import Frame

    values = {"model": "mobilenetv2", "reranker": "geometric", "device": "cpu", "map_device": "cpu"}
    pipeline = LoopClosurePipeline(PipelineConfig.from_dict({**values, **params}), encoder)
    frame_of, closures = {}, []
    for i, (image, pose) in enumerate(zip(images, poses, strict=True)):
        frame = Frame(1000.0 + i * PERIOD_S, image, "camera", K, pose=pose if with_odometry else None)
        step = pipeline.process(frame)
        frame_of[step.retrieval.keyframe.id] = i
        for d in [step.decision, *step.decision.confirmed]:
            if d.accepted:
                closures.append((frame_of[d.query_id], frame_of[d.best.candidate.id]))
    return closures


@pytest.fixture(scope="module")
def slow_drive():
    # 0.1 m/s for 40 s down the 19.6 m straight south side: the keyframe and seconds windows
    # cover the last 3 m only, and views 3-4 m apart along a corridor verify.
    return _centreline(-9.0 + 0.05 * np.arange(80), FULL, noise=2.0)


@pytest.fixture(scope="module")
def stopped():
    return _centreline(np.full(80, 2.0), SMALL, noise=5.0)  # 40 s at one pose


@pytest.mark.parametrize("with_odometry", [True, False], ids=["odometry", "no_odometry"])
def test_a_slow_drive_closes_no_loop_on_itself(encoder, slow_drive, with_odometry):
    assert _closures(encoder, *slow_drive, with_odometry) == []
    # XFeat at 100 inliers (the default) does not verify these views 3-4 m apart; the older,
    # looser SIFT at 20 inliers does, and then the rule alone keeps them out.
    loose = {"geometric_feature": "sift", "geometric_min_inliers": 20}
    assert _closures(encoder, *slow_drive, with_odometry, **loose) == []
    rule_off = {"exclude_recent_distance_m": 0.0} if with_odometry else {"stationary_similarity": 1.0}
    assert len(_closures(encoder, *slow_drive, with_odometry, **loose, **rule_off)) >= 8  # what it was


@pytest.mark.parametrize("with_odometry", [True, False], ids=["odometry", "no_odometry"])
def test_a_stopped_camera_closes_no_loop_on_itself(encoder, stopped, with_odometry):
    assert _closures(encoder, *stopped, with_odometry) == []
    rule_off = {"exclude_recent_distance_m": 0.0} if with_odometry else {"stationary_similarity": 1.0}
    assert len(_closures(encoder, *stopped, with_odometry, **rule_off)) > 10


@pytest.mark.parametrize("with_odometry", [True, False], ids=["odometry", "no_odometry"])
def test_a_revisit_after_a_loop_is_still_found(encoder, with_odometry):
    from vpr_ros.world import make_world_sequence

    # A lap and a quarter at walking speed: the revisits are 0.2-0.6 m from the first pass in
    # straight line but a lap (65 m) of path away.
    seq = make_world_sequence(laps=1.25, image_size=SMALL)
    odometry = [p @ seq.base_T_camera for p in seq.odom_body_poses]
    closures = _closures(encoder, seq.images, odometry, seq.camera_matrix, with_odometry)
    true = [(q, m) for q, m in closures if seq.same_place[q, m]]
    assert len(true) >= 20 and len(true) == len(closures), closures
    # From the end of the lap on (frame 84: 59 m of path) back to its start: a lap apart.
    assert all(q - m >= 60 for q, m in true), true


def test_small_images_are_enlarged_for_verification_with_matching_intrinsics():
    from vpr_ros.pipeline import verification_view
    from vpr_ros.world import default_camera

    small, full = default_camera(160, 120), default_camera(640, 480)
    image = np.random.default_rng(7).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    depth = np.ones((120, 160), np.float32)
    big, K, big_depth = verification_view(image, small.K, depth, 640, upscale=True)
    assert big.shape == (480, 640, 3) and big_depth.shape == (480, 640)
    # The 640-pixel camera's own intrinsics: pixel centres map exactly (cx 79.5 -> 319.5).
    np.testing.assert_allclose(K, full.K, atol=1e-12)
    same, K_same, _ = verification_view(image, small.K, depth, 640, upscale=False)
    assert same is image and np.array_equal(K_same, small.K)
    wide = np.zeros((960, 1280, 3), np.uint8)  # wider than the width: downscaled either way
    assert verification_view(wide, full.K, None, 640, upscale=True)[0].shape == (480, 640, 3)
