"""Image header stamps reach every output unchanged, to the nanosecond.

10^5 random stamps go through each conversion the graph applies (image header -> Frame ->
Keyframe -> vpr/keyframes, vpr/candidates, the map records, the re-ranker's LoopClosure, the
loop-closure node's decision); a float-seconds path would change most of them (checked
too, so the test cannot pass by accident). test_ros_integration.py sends random stamps
through the real node processes.
"""

import numpy as np
import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from vpr_ros.map.keyframe_map import KeyframeMap  # noqa: E402
from vpr_ros.map.store import MapStore, load_map  # noqa: E402
from vpr_ros.ros.conversions import (  # noqa: E402
    candidates_from_msg,
    candidates_to_msg,
    decision_to_msg,
    keyframe_from_msg,
    keyframe_to_msg,
    ns_to_stamp,
    stamp_to_ns,
    stamp_to_sec,
    verification_from_msg,
    verification_to_msg,
)
from vpr_ros.types import Candidate, Frame, Keyframe, LoopDecision, LoopStatus, Verification  # noqa: E402

N = 100_000


def _random_stamps(n: int, seed: int = 0) -> list[Time]:
    rng = np.random.default_rng(seed)
    secs = rng.integers(0, 2**31 - 1, size=n)
    nanos = rng.integers(0, 1_000_000_000, size=n)
    return [Time(sec=int(s), nanosec=int(ns)) for s, ns in zip(secs, nanos, strict=True)]


def _same(a: Time, b: Time) -> bool:
    return (a.sec, a.nanosec) == (b.sec, b.nanosec)


def test_float_seconds_would_change_most_stamps():
    stamps = _random_stamps(10_000, seed=1)
    changed = sum(
        not _same(t, ns_to_stamp(int(round(stamp_to_sec(t) * 1e9)))) for t in stamps
    )  # the old path: seconds as a float, back to a Time
    assert changed > 9_000


def test_every_conversion_keeps_the_stamp_to_the_nanosecond():
    descriptor = np.ones(4, np.float32) / 2
    wrong = 0
    for t in _random_stamps(N):
        stamp_ns = stamp_to_ns(t)
        frame = Frame(stamp_to_sec(t), np.zeros((2, 2, 3), np.uint8), "cam", stamp_ns=stamp_ns)
        kf = Keyframe(7, frame.stamp, descriptor, frame_id="cam", stamp_ns=frame.stamp_ns)
        kf_msg = keyframe_to_msg(kf, "m", with_image=False)
        back = keyframe_from_msg(kf_msg)
        cand = Candidate(3, back.stamp, 0.9, "cam", back.stamp_ns)
        cands_msg = candidates_to_msg(Header(stamp=kf_msg.header.stamp), back, [cand], "m")
        (cand_back,) = candidates_from_msg(cands_msg)
        closure = verification_to_msg(back, Verification(cand_back, 30.0, 30, True, "ok"), "m", "geometric")
        verdict = verification_from_msg(closure)
        late = decision_to_msg(
            LoopDecision(7, stamp_to_ns(closure.header.stamp), LoopStatus.NO_CANDIDATES, ""), None
        )
        outputs = (
            kf_msg.header.stamp,
            cands_msg.candidate_stamps[0],
            closure.header.stamp,
            closure.query_stamp,
            closure.match_stamp,
            ns_to_stamp(verdict.candidate.stamp_ns),
            late.header.stamp,
            late.query_stamp,
        )
        wrong += not all(_same(t, out) for out in outputs)
    assert wrong == 0


def test_map_records_keep_exact_stamps_across_save_and_load(tmp_path):
    stamps = [stamp_to_ns(t) for t in _random_stamps(2_000, seed=2)]
    kmap = KeyframeMap(8, "Flat", device="cpu")
    rng = np.random.default_rng(3)
    for stamp_ns in stamps:
        x = rng.normal(size=8).astype(np.float32)
        kmap.add(x / np.linalg.norm(x), stamp_ns * 1e-9, stamp_ns=stamp_ns)
    MapStore(tmp_path / "map", "test").save(kmap.snapshot())
    loaded, _ = load_map(tmp_path / "map")
    assert [loaded.records[i].stamp_ns for i in sorted(loaded.records)] == stamps
    found = loaded.search(rng.normal(size=8).astype(np.float32), 50)
    assert all(c.stamp_ns == stamps[c.id] for c in found)


def test_a_map_written_before_exact_stamps_still_loads():
    from vpr_ros.map.keyframe_map import KeyframeRecord

    record = KeyframeRecord.from_dict({"id": 3, "stamp": 12.5, "frame_id": "", "camera": "", "pose": None})
    assert record.stamp_ns == 12_500_000_000
    with pytest.raises(ValueError, match="stamp_ns"):
        KeyframeRecord.from_dict({"id": 3, "stamp": 1.0, "stamp_ns": -5})
