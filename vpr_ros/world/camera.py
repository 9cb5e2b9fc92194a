"""The cameras of the test world: image size, intrinsics and a ``vpr_ros.lens.Lens``.

Pixel coordinates follow OpenCV: the centre of pixel (row i, column j) is at (x, y) = (j, i),
so the principal point of a centred camera is ((w - 1) / 2, (h - 1) / 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..lens import RECTIFIED, Lens

# Coefficients of the distorted lenses. Each one keeps the radial mapping monotonic over the
# whole field the renderer can see, so every ray has exactly one pixel.
PLUMB_BOB = (-0.28, 0.07, 0.0004, -0.0003, 0.0)
RATIONAL_POLYNOMIAL = (-0.1, 0.02, 0.0003, 0.0002, 0.0, 0.25, 0.0, 0.0)
EQUIDISTANT = (0.04, -0.01, 0.002, -0.0005)
LENSES = ("", "plumb_bob", "rational_polynomial", "equidistant")
# Focal length at 640 pixels wide; the fisheye gets a shorter one (a ~120 deg horizontal field).
DEFAULT_FOCAL_640 = 420.0
FISHEYE_FOCAL_640 = 300.0


@dataclass(frozen=True, eq=False)
class CameraSpec:
    width: int
    height: int
    K: np.ndarray  # 3x3 intrinsics
    lens: Lens = field(default=RECTIFIED)
    name: str = "camera"

    def __post_init__(self):
        k = np.array(self.K, dtype=np.float64).reshape(3, 3)
        k.setflags(write=False)  # the renderer caches rays per camera: K must not change
        object.__setattr__(self, "K", k)

    def key(self) -> tuple:
        """Hashable identity of the geometry (what the ray cache is keyed on)."""
        return (self.width, self.height, tuple(self.K.ravel()), self.lens)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def pinhole_matrix(width: int, height: int, focal: float) -> np.ndarray:
    return np.array([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def default_camera(width: int = 640, height: int = 480, focal: float | None = None) -> CameraSpec:
    """The rectified camera: fx = fy = 420 at 640 pixels wide (a ~75 deg horizontal field)."""
    focal = DEFAULT_FOCAL_640 * width / 640.0 if focal is None else focal
    return CameraSpec(width, height, pinhole_matrix(width, height, focal))


def make_camera(
    lens: str = "", width: int = 640, height: int = 480, focal: float | None = None
) -> CameraSpec:
    """A camera with one of the ROS distortion models (``LENSES``) and this module's coefficients."""
    coeffs = {
        "": (),
        "plumb_bob": PLUMB_BOB,
        "rational_polynomial": RATIONAL_POLYNOMIAL,
        "equidistant": EQUIDISTANT,
    }
    if lens not in coeffs:
        raise ValueError(f"lens must be one of {', '.join(repr(x) for x in LENSES)}, got {lens!r}")
    if focal is None:
        base = FISHEYE_FOCAL_640 if lens == "equidistant" else DEFAULT_FOCAL_640
        focal = base * width / 640.0
    k = pinhole_matrix(width, height, focal)
    return CameraSpec(width, height, k, Lens.from_camera_info(lens, coeffs[lens]), name=lens or "rectified")
