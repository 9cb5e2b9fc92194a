import numpy as np
import pytest

from vpr_ros.keyframe_gate import KeyframeGate


def _pose(x=0.0, yaw_deg=0.0):
    c, s = np.cos(np.deg2rad(yaw_deg)), np.sin(np.deg2rad(yaw_deg))
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    m[0, 3] = x
    return m


def test_min_period_uses_message_time():
    gate = KeyframeGate(min_period=0.5)
    decisions = [gate.check(t) for t in (0.0, 0.2, 0.49, 0.5, 0.9, 1.1)]
    assert [d.accept for d in decisions] == [True, False, False, True, False, True]
    assert decisions[0].reason == "first" and decisions[1].reason == "too_soon"


def test_rejected_frames_do_not_move_the_reference_time():
    gate = KeyframeGate(min_period=1.0)
    gate.check(0.0)
    for t in np.arange(0.1, 1.0, 0.1):
        assert not gate.check(float(t)).accept
    assert gate.check(1.0).accept


def test_motion_gate_needs_translation_or_rotation():
    gate = KeyframeGate(min_period=0.0, min_translation=1.0, min_rotation_deg=15.0)
    assert gate.check(0.0, _pose()).accept
    d = gate.check(1.0, _pose(x=0.3))
    assert not d.accept and d.reason == "no_motion"
    assert gate.check(2.0, _pose(x=1.2)).accept  # moved 1.2 m from the last keyframe
    assert gate.check(3.0, _pose(x=1.2, yaw_deg=20.0)).accept  # turned in place
    assert not gate.check(4.0, _pose(x=1.3, yaw_deg=25.0)).accept


def test_motion_gate_without_pose_falls_back_to_time():
    gate = KeyframeGate(min_period=0.5, min_translation=1.0)
    assert gate.check(0.0).accept
    assert gate.check(0.6).accept


def test_time_jump_backwards_resets_instead_of_blocking():
    gate = KeyframeGate(min_period=0.5)
    gate.check(100.0)
    d = gate.check(3.0)  # bag restarted
    assert d.accept and d.reason == "time_jump"
    assert not gate.check(3.2).accept


def test_negative_thresholds_are_rejected():
    with pytest.raises(ValueError):
        KeyframeGate(min_period=-1)
