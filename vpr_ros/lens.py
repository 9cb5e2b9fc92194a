"""Lens distortion models of sensor_msgs/CameraInfo, applied to points with OpenCV.

ROS names three models (``distortion_model`` + ``D``): ``plumb_bob`` (k1 k2 p1 p2 k3),
``rational_polynomial`` (k1 k2 p1 p2 k3 k4 k5 k6) and ``equidistant`` (the fisheye model:
k1 k2 k3 k4). Coefficients act on normalised image coordinates, so they do not change when
an image is resized (only the camera matrix does). An empty model or all-zero coefficients
is a rectified (pinhole) camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Coefficients each model takes (shorter D vectors are zero-padded, as image_geometry does).
MODEL_COEFFS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}
# OpenCV's default of 5 iterations leaves ~1e-3 (normalised) error at strong distortion.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)


class LensError(ValueError):
    """A distortion model or coefficient vector this package cannot apply."""


@dataclass(frozen=True)
class Lens:
    model: str = ""  # "" (rectified), "plumb_bob", "rational_polynomial" or "equidistant"
    coeffs: tuple[float, ...] = ()

    @staticmethod
    def from_camera_info(model: str, coeffs) -> Lens:
        """Raises LensError for an unknown model, too many or non-finite coefficients."""
        model = (model or "").strip()
        coeffs = tuple(float(c) for c in np.ravel(np.asarray(coeffs, dtype=np.float64)))
        if not model or not any(coeffs):
            return RECTIFIED
        if model not in MODEL_COEFFS:
            raise LensError(f"distortion model '{model}' is not one of {', '.join(MODEL_COEFFS)}")
        if len(coeffs) > MODEL_COEFFS[model] and any(coeffs[MODEL_COEFFS[model] :]):
            raise LensError(f"{model} takes {MODEL_COEFFS[model]} coefficients, got {len(coeffs)}")
        if not all(np.isfinite(coeffs)):
            raise LensError(f"{model} coefficients are not finite: {coeffs}")
        n = MODEL_COEFFS[model]
        return Lens(model, (coeffs + (0.0,) * n)[:n])

    @property
    def is_rectified(self) -> bool:
        return not self.model

    def _d(self) -> np.ndarray:
        return np.asarray(self.coeffs, np.float64)

    def undistort(self, pixels: np.ndarray, camera_matrix: np.ndarray) -> np.ndarray:
        """Pixel coordinates [N, 2] -> normalised coordinates (x/z, y/z) of the ideal pinhole."""
        pts = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
        k = np.asarray(camera_matrix, np.float64)
        if len(pts) == 0:
            return np.zeros((0, 2))
        if self.is_rectified:
            out = cv2.undistortPoints(pts, k, None)
        elif self.model == "equidistant":
            out = cv2.fisheye.undistortPoints(pts, k, self._d(), criteria=_UNDISTORT_CRITERIA)
        else:
            out = cv2.undistortPoints(pts, k, self._d(), criteria=_UNDISTORT_CRITERIA)
        return out.reshape(-1, 2)

    def project(self, points: np.ndarray, camera_matrix: np.ndarray) -> np.ndarray:
        """Points [N, 3] in the camera optical frame (z forward) -> distorted pixels [N, 2]."""
        pts = np.asarray(points, np.float64).reshape(-1, 1, 3)
        k = np.asarray(camera_matrix, np.float64)
        if len(pts) == 0:
            return np.zeros((0, 2))
        zero = np.zeros(3)
        if self.model == "equidistant":
            out, _ = cv2.fisheye.projectPoints(pts, zero, zero, k, self._d())
        else:
            out, _ = cv2.projectPoints(pts, zero, zero, k, None if self.is_rectified else self._d())
        return out.reshape(-1, 2)

    def to_camera_info(self) -> tuple[str, list[float]]:
        """(distortion_model, d) for a CameraInfo message; plumb_bob zeros when rectified."""
        if self.is_rectified:
            return "plumb_bob", [0.0] * 5
        return self.model, list(self.coeffs)


RECTIFIED = Lens()
