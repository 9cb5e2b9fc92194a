"""Robust two-view models for geometric verification: OpenCV's USAC or PoseLib's LO-RANSAC.

``essential`` works on undistorted normalised coordinates (threshold in normalised units),
``fundamental`` on pixels. Both return a 3x3 model and the inlier mask, or ``(None, None)``.
An estimator that raises (OpenCV 5's USAC asserted ``!model.empty()`` in
``setModelParameters`` on about 1 pair in 300) does not cost the candidate: the next one in
``FALLBACKS`` is tried on the same matches, and the note says so.
"""

from __future__ import annotations

import cv2
import numpy as np

# usac: OpenCV's USAC_DEFAULT (LO-RANSAC with final least-squares polishing; plain RANSAC
# keeps the minimal-sample model: 3-6 deg translation direction error on a rendered scene
# where USAC_DEFAULT was within 0.1 deg). USAC_MAGSAC was measured too and left out: on the
# rendered world's revisits its essential poses were 5x worse (0.7 deg median rotation error).
ESTIMATORS = ("usac", "poselib")
# The methods tried after the configured one raises; plain RANSAC is always available (every
# USAC variant asserted on the same pairs, RANSAC and LMEDS did not).
FALLBACKS = {"usac": ("poselib", "ransac"), "poselib": ("usac", "ransac")}
_OPENCV = {"usac": "USAC_DEFAULT", "ransac": "RANSAC"}
# PoseLib's pinhole camera for points already in normalised coordinates.
_IDENTITY_CAMERA = {"model": "PINHOLE", "width": 1, "height": 1, "params": [1.0, 1.0, 0.0, 0.0]}

Model = tuple[np.ndarray | None, np.ndarray | None]


def _poselib():
    try:
        import poselib
    except ImportError as exc:  # listed in tools/requirements.txt
        raise RuntimeError(f"geometric_estimator 'poselib' needs the poselib package: {exc}") from exc
    return poselib


# PoseLib's default floor of 1000 RANSAC iterations cost ~20 ms per pair; its adaptive stop
# (success_prob) already runs longer where inliers are few.
POSELIB_MIN_ITERATIONS = 100


def _poselib_options(threshold: float, confidence: float) -> tuple[dict, dict]:
    ransac = {
        "max_epipolar_error": threshold,
        "success_prob": confidence,
        "min_iterations": POSELIB_MIN_ITERATIONS,
    }
    # Cauchy loss at half the inlier threshold for the final refinement, whatever the wrapper's default.
    return ransac, {"loss_scale": 0.5 * threshold}


def _cross(t: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])


def _opencv_essential(pq, pm, threshold, confidence, method) -> Model:
    return cv2.findEssentialMat(pq, pm, np.eye(3), getattr(cv2, _OPENCV[method]), confidence, threshold)


def _poselib_essential(pq, pm, threshold, confidence) -> Model:
    ransac, bundle = _poselib_options(threshold, confidence)
    pose, info = _poselib().estimate_relative_pose(pq, pm, _IDENTITY_CAMERA, _IDENTITY_CAMERA, ransac, bundle)
    if not info.get("num_inliers"):
        return None, None
    # E = [t]x R of the refined pose (match_T_query): recoverPose gives this pose back.
    t = np.asarray(pose.t, np.float64).ravel()
    return _cross(t) @ np.asarray(pose.R, np.float64), np.asarray(info["inliers"], np.uint8)


def _opencv_fundamental(pts_q, pts_m, threshold, confidence, method) -> Model:
    return cv2.findFundamentalMat(pts_q, pts_m, getattr(cv2, _OPENCV[method]), threshold, confidence)


def _poselib_fundamental(pts_q, pts_m, threshold, confidence) -> Model:
    ransac, bundle = _poselib_options(threshold, confidence)
    model, info = _poselib().estimate_fundamental(pts_q, pts_m, ransac, bundle)
    if not info.get("num_inliers"):
        return None, None
    return np.asarray(model, np.float64), np.asarray(info["inliers"], np.uint8)


def _run(kind: str, method: str, a, b, threshold, confidence) -> Model:
    if method == "poselib":
        solve = _poselib_essential if kind == "essential" else _poselib_fundamental
        return solve(a, b, threshold, confidence)
    solve = _opencv_essential if kind == "essential" else _opencv_fundamental
    return solve(a, b, threshold, confidence, method)


def _estimate(kind: str, a, b, threshold: float, confidence: float, estimator: str):
    if estimator not in FALLBACKS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got '{estimator}'")
    a, b = np.ascontiguousarray(a, np.float64), np.ascontiguousarray(b, np.float64)
    failures = []
    for method in (estimator, *FALLBACKS[estimator]):
        try:
            model, mask = _run(kind, method, a, b, threshold, confidence)
        except (cv2.error, RuntimeError) as exc:
            failures.append(f"{method} raised {_short(exc)}")
            continue
        note = f" ({'; '.join(failures)}; {method} used)" if failures else ""
        return model, (None if mask is None else np.asarray(mask).ravel().astype(bool)), note
    return None, None, f" ({'; '.join(failures)})"


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[-90:] if len(text) > 90 else text


def essential(pq, pm, threshold: float, confidence: float, estimator: str = "usac"):
    """(E, inlier mask, note) from normalised coordinates, threshold in normalised units."""
    return _estimate("essential", pq, pm, threshold, confidence, estimator)


def fundamental(pts_q, pts_m, threshold_px: float, confidence: float, estimator: str = "usac"):
    """(F, inlier mask, note) from pixel coordinates."""
    return _estimate("fundamental", pts_q, pts_m, threshold_px, confidence, estimator)
