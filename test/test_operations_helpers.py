"""Small pieces behind diagnostics and the debug image: percentiles, memory, match drawing."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from vpr_ros.debug_image import draw_pair, find_matches
from vpr_ros.runtime_stats import LatencyWindow, rss_bytes, rss_of


def test_latency_window_reports_percentiles_of_the_recent_values_only():
    window = LatencyWindow(size=100)
    assert window.summary("x") == {}
    for v in range(1000):  # only the last 100 (900..999) count
        window.add(float(v))
    s = window.summary("encode_ms")
    assert s["encode_ms_p50"] == pytest.approx(949.5)
    assert s["encode_ms_p90"] == pytest.approx(989.1)
    assert s["encode_ms_max"] == 999.0 and window.count == 1000


def test_memory_of_this_process_and_of_a_pid():
    mine = rss_bytes()
    assert mine > 10 * 2**20
    other = rss_of(os.getpid())
    assert other is not None and abs(other - mine) < 50 * 2**20
    assert rss_of(2**22 + 12345) is None  # no such process


def _textured(seed: int, h=240, w=320) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    image = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    return cv2.GaussianBlur(image, (3, 3), 0)


def test_find_matches_agrees_on_a_shifted_view_and_not_on_another_scene():
    scene = _textured(1)
    shifted = np.roll(scene, 12, axis=1)
    pts_q, pts_m, inliers = find_matches(scene, shifted)
    assert inliers.sum() >= 30
    np.testing.assert_allclose(np.median((pts_m - pts_q)[inliers], axis=0), [12, 0], atol=1.0)
    _, _, other = find_matches(scene, _textured(2))
    assert other.sum() < inliers.sum() // 3


def test_draw_pair_puts_both_images_side_by_side_at_one_height():
    a, b = _textured(3, 240, 320), _textured(4, 120, 200)
    pts = np.array([[10.0, 20.0], [100.0, 50.0]])
    canvas = draw_pair(a, b, pts, pts / 2, np.array([True, False]), caption="PASS kf 5 -> 1")
    assert canvas.shape == (240, 320 + 400, 3) and canvas.dtype == np.uint8
    assert (canvas[:24] == 0).mean() > 0.5  # caption band
    np.testing.assert_array_equal(canvas[200:, :320], a[200:])  # below the lines, the query as is
