"""Camera message payloads to numpy images, without ROS (the one home for encodings).

The ROS layer passes the fields of sensor_msgs/Image or CompressedImage; everything here
is plain numpy/OpenCV so it can be tested and reused offline (bags read with rosbags).
Every failure raises ``BadImageError`` with a short machine-readable ``reason`` that the
nodes count in diagnostics.
"""

from __future__ import annotations

import cv2
import numpy as np

# encoding -> (channels, numpy dtype, conversion to RGB or None when already RGB)
_RAW_ENCODINGS = {
    "rgb8": (3, np.uint8, None),
    "bgr8": (3, np.uint8, cv2.COLOR_BGR2RGB),
    "rgba8": (4, np.uint8, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, np.uint8, cv2.COLOR_BGRA2RGB),
    "mono8": (1, np.uint8, cv2.COLOR_GRAY2RGB),
    "8UC1": (1, np.uint8, cv2.COLOR_GRAY2RGB),
    "8UC3": (3, np.uint8, cv2.COLOR_BGR2RGB),  # OpenCV convention: BGR
    "mono16": (1, np.uint16, cv2.COLOR_GRAY2RGB),
    "16UC1": (1, np.uint16, cv2.COLOR_GRAY2RGB),
    "bayer_rggb8": (1, np.uint8, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, np.uint8, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, np.uint8, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, np.uint8, cv2.COLOR_BayerGB2RGB),
}

SUPPORTED_ENCODINGS = tuple(_RAW_ENCODINGS)


class BadImageError(ValueError):
    """An image message that cannot be used; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _raw_view(encoding: str, height: int, width: int, step: int, data, big_endian: bool) -> np.ndarray:
    if encoding not in _RAW_ENCODINGS:
        raise BadImageError(
            "unknown_encoding", f"encoding '{encoding}' (supported: {', '.join(_RAW_ENCODINGS)})"
        )
    channels, dtype, _ = _RAW_ENCODINGS[encoding]
    if height <= 0 or width <= 0:
        raise BadImageError("empty", f"image size {width}x{height}")
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    step = step or row_bytes
    buf = np.frombuffer(data, dtype=np.uint8)
    if step < row_bytes or buf.size != step * height:
        raise BadImageError(
            "size_mismatch",
            f"{encoding} {width}x{height} step {step} needs {step * height} bytes, got {buf.size}",
        )
    rows = buf.reshape(height, step)[:, :row_bytes]
    image = rows.view(np.dtype(dtype).newbyteorder(">" if big_endian else "<")) if itemsize > 1 else rows
    return image.reshape(height, width, channels) if channels > 1 else image.reshape(height, width)


def decode_raw(
    encoding: str, height: int, width: int, step: int, data, big_endian: bool = False
) -> np.ndarray:
    """sensor_msgs/Image fields -> HxWx3 uint8 RGB (16-bit images are scaled to 8 bits)."""
    image = _raw_view(encoding, height, width, step, data, big_endian)
    if image.dtype != np.uint8:  # 16-bit grey: stretch the used range so features survive
        image = image.astype(np.float32)
        lo, hi = float(image.min()), float(image.max())
        image = ((image - lo) * (255.0 / max(hi - lo, 1.0))).astype(np.uint8)
    code = _RAW_ENCODINGS[encoding][2]
    rgb = image if code is None else cv2.cvtColor(np.ascontiguousarray(image), code)
    return np.ascontiguousarray(rgb)


def decode_compressed(fmt: str, data) -> np.ndarray:
    """sensor_msgs/CompressedImage fields (jpeg/png) -> HxWx3 uint8 RGB."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise BadImageError("empty", f"compressed image ({fmt or 'unknown format'}) has no data")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadImageError("corrupt_compressed", f"could not decode {buf.size} bytes as '{fmt}'")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_depth(
    encoding: str, height: int, width: int, step: int, data, big_endian: bool = False
) -> np.ndarray:
    """Depth image (16UC1 millimetres or 32FC1 metres) -> HxW float32 metres, 0 = invalid."""
    if encoding in ("16UC1", "mono16"):
        depth = _raw_view(encoding, height, width, step, data, big_endian).astype(np.float32) * 1e-3
    elif encoding == "32FC1":
        buf = np.frombuffer(data, dtype=np.uint8)
        if step * height != buf.size or step < width * 4 or height <= 0:
            raise BadImageError("size_mismatch", f"32FC1 {width}x{height} step {step}, got {buf.size} bytes")
        dt = np.dtype(np.float32).newbyteorder(">" if big_endian else "<")
        depth = (
            buf.reshape(height, step)[:, : width * 4]
            .copy()
            .view(dt)
            .reshape(height, width)
            .astype(np.float32)
        )
    else:
        raise BadImageError("unknown_encoding", f"depth encoding '{encoding}' (supported: 16UC1, 32FC1)")
    depth[~np.isfinite(depth)] = 0.0
    return depth


def encode_rgb8(image: np.ndarray) -> tuple[int, int, int, bytes]:
    """HxWx3 uint8 RGB -> (height, width, step, data) of an rgb8 sensor_msgs/Image."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    return h, w, w * 3, image.tobytes()


def resize_to_width(image: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """Downscale to at most ``width`` pixels wide; returns the image and the scale applied."""
    h, w = image.shape[:2]
    if width <= 0 or w <= width:
        return image, 1.0
    scale = width / w
    size = (width, max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale
