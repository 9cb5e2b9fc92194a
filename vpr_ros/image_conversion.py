"""Camera message payloads to numpy images, without ROS (the one home for encodings).

The ROS layer passes the fields of sensor_msgs/Image or CompressedImage; everything here
is plain numpy/OpenCV so it can be tested and reused offline (bags read with rosbags).
Every failure raises ``BadImageError`` with a short machine-readable ``reason`` that the
nodes count in diagnostics.

Image size is checked against ``max_pixels`` before anything is decoded or allocated: for
raw images from the message's width and height, for compressed ones from the file header
(PNG IHDR, JPEG SOF, and the BMP, PNM, WebP and TIFF headers for image folders). A 125 kB
PNG can claim 32000x32000 pixels and would otherwise cost gigabytes when decoded.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

# Largest image accepted by default (width * height); <= 0 or None disables the check.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096

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


def check_size(width: int, height: int, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """BadImageError("too_large") for an image over ``max_pixels`` (None or <= 0: no limit)."""
    if max_pixels and max_pixels > 0 and width * height > max_pixels:
        raise BadImageError("too_large", f"{width}x{height} is over the limit of {max_pixels} pixels")


class _Truncated(Exception):
    pass


def _bytes(buf: np.ndarray, offset: int, n: int) -> bytes:
    if offset < 0 or offset + n > buf.size:
        raise _Truncated
    return buf[offset : offset + n].tobytes()


def _u(buf: np.ndarray, offset: int, fmt: str) -> int:
    return struct.unpack(fmt, _bytes(buf, offset, struct.calcsize(fmt)))[0]


# JPEG start-of-frame markers (all but DHT C4, JPG C8 and DAC CC in C0-CF).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Real files have a few dozen markers before the SOF; a crafted one must not make the walk slow.
_JPEG_MAX_MARKERS = 4096


def _jpeg_size(buf: np.ndarray) -> tuple[int, int] | None:
    # Walk the segments by their lengths (so an EXIF thumbnail's SOF is skipped) to the first
    # SOF; the scan data (SOS) is never reached in a valid file before it.
    offset = 2
    for _ in range(_JPEG_MAX_MARKERS):
        if _u(buf, offset, "B") != 0xFF:
            return None
        marker = _u(buf, offset + 1, "B")
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            offset += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any SOF
            return None
        length = _u(buf, offset + 2, ">H")
        if marker in _JPEG_SOF:
            height, width = _u(buf, offset + 5, ">H"), _u(buf, offset + 7, ">H")
            return width, height
        if length < 2:
            return None
        offset += 2 + length
    return None


def _pnm_size(buf: np.ndarray) -> tuple[int, int] | None:
    head = _bytes(buf, 0, min(buf.size, 4096))
    tokens, i = [], 2
    while len(tokens) < 2 and i < len(head):
        c = head[i : i + 1]
        if c == b"#":  # a comment runs to the end of its line
            end = head.find(b"\n", i)
            i = len(head) if end < 0 else end + 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < len(head) and head[j : j + 1].isdigit():
                j += 1
            if j == i:
                return None
            tokens.append(int(head[i:j]))
            i = j
    return (tokens[0], tokens[1]) if len(tokens) == 2 and i < len(head) else None


def _webp_size(buf: np.ndarray) -> tuple[int, int] | None:
    chunk = _bytes(buf, 12, 4)
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key frame start code
        if _bytes(buf, 23, 3) != b"\x9d\x01\x2a":
            return None
        return _u(buf, 26, "<H") & 0x3FFF, _u(buf, 28, "<H") & 0x3FFF
    if chunk == b"VP8L":  # lossless: width-1 and height-1 in 14 bits each
        if _u(buf, 20, "B") != 0x2F:
            return None
        bits = _u(buf, 21, "<I")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        w, h = _bytes(buf, 24, 3), _bytes(buf, 27, 3)
        return int.from_bytes(w, "little") + 1, int.from_bytes(h, "little") + 1
    return None


def _tiff_size(buf: np.ndarray) -> tuple[int, int] | None:
    e = "<" if _bytes(buf, 0, 2) == b"II" else ">"
    ifd = _u(buf, 4, e + "I")
    size = {}
    for k in range(_u(buf, ifd, e + "H")):
        entry = ifd + 2 + 12 * k
        tag, kind = _u(buf, entry, e + "H"), _u(buf, entry + 2, e + "H")
        if tag in (256, 257) and kind in (3, 4):  # ImageWidth / ImageLength, SHORT or LONG
            size[tag] = _u(buf, entry + 8, e + ("H" if kind == 3 else "I"))
    return (size[256], size[257]) if len(size) == 2 else None


def _png_size(buf: np.ndarray) -> tuple[int, int] | None:
    if _bytes(buf, 0, 8) != b"\x89PNG\r\n\x1a\n" or _bytes(buf, 12, 4) != b"IHDR":
        return None
    return _u(buf, 16, ">I"), _u(buf, 20, ">I")


def _bmp_size(buf: np.ndarray) -> tuple[int, int]:
    if _u(buf, 14, "<I") == 12:  # OS/2 header: 16-bit sizes
        return _u(buf, 18, "<H"), _u(buf, 20, "<H")
    return _u(buf, 18, "<i"), abs(_u(buf, 22, "<i"))  # negative height = top-down rows


# (magic test on the first 12 bytes, size parser)
_HEADERS = (
    (lambda h: h.startswith(b"\x89PNG"), _png_size),  # a mangled rest of the signature: corrupt
    (lambda h: h.startswith(b"\xff\xd8"), _jpeg_size),
    (lambda h: h.startswith(b"BM"), _bmp_size),
    (lambda h: len(h) > 1 and h[:1] == b"P" and h[1:2] in b"123456", _pnm_size),
    (lambda h: h.startswith(b"RIFF") and h[8:12] == b"WEBP", _webp_size),
    (lambda h: h.startswith((b"II*\x00", b"MM\x00*")), _tiff_size),
)


def image_size(data) -> tuple[int, int]:
    """(width, height) from an encoded image's header, without decoding it.

    PNG, JPEG, BMP, PNM (P1-P6), WebP and TIFF. Another format raises
    BadImageError("unreadable_header"); one of these whose header is cut short or names no
    size raises BadImageError("corrupt_compressed"), as a failed decode did before.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    head = buf[:12].tobytes()
    parser = next((parse for matches, parse in _HEADERS if matches(head)), None)
    if parser is None:
        raise BadImageError("unreadable_header", f"{buf.size} bytes of no known image format")
    try:
        size = parser(buf)
    except _Truncated:
        size = None
    if size is None or size[0] <= 0 or size[1] <= 0:
        raise BadImageError("corrupt_compressed", f"no image size in the header of {buf.size} bytes")
    return size


def _raw_view(
    encoding: str, height: int, width: int, step: int, data, big_endian: bool, max_pixels: int | None
) -> np.ndarray:
    if encoding not in _RAW_ENCODINGS:
        raise BadImageError(
            "unknown_encoding", f"encoding '{encoding}' (supported: {', '.join(_RAW_ENCODINGS)})"
        )
    channels, dtype, _ = _RAW_ENCODINGS[encoding]
    if height <= 0 or width <= 0:
        raise BadImageError("empty", f"image size {width}x{height}")
    check_size(width, height, max_pixels)  # before the data is looked at
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
    encoding: str,
    height: int,
    width: int,
    step: int,
    data,
    big_endian: bool = False,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """sensor_msgs/Image fields -> HxWx3 uint8 RGB (16-bit images are scaled to 8 bits)."""
    image = _raw_view(encoding, height, width, step, data, big_endian, max_pixels)
    if image.dtype != np.uint8:  # 16-bit grey: stretch the used range so features survive
        image = image.astype(np.float32)
        lo, hi = float(image.min()), float(image.max())
        image = ((image - lo) * (255.0 / max(hi - lo, 1.0))).astype(np.uint8)
    code = _RAW_ENCODINGS[encoding][2]
    try:
        rgb = image if code is None else cv2.cvtColor(np.ascontiguousarray(image), code)
    except cv2.error as err:  # a bad image, not a worker error
        raise BadImageError("decode_error", f"{encoding} {width}x{height}: {err}") from None
    return np.ascontiguousarray(rgb)


def decode_compressed(fmt: str, data, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage fields (jpeg/png) -> HxWx3 uint8 RGB.

    With a ``max_pixels`` limit the header must name the image size (see ``image_size``).
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise BadImageError("empty", f"compressed image ({fmt or 'unknown format'}) has no data")
    if max_pixels and max_pixels > 0:
        check_size(*image_size(buf), max_pixels)
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if bgr is not None:
            # The header said otherwise (another frame of a multi-image file?): still refuse.
            check_size(bgr.shape[1], bgr.shape[0], max_pixels)
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    except cv2.error as err:  # OpenCV's own size limit, a broken stream: a bad image
        raise BadImageError("corrupt_compressed", f"{buf.size} bytes as '{fmt}': {err}") from None
    raise BadImageError("corrupt_compressed", f"could not decode {buf.size} bytes as '{fmt}'")


def read_image_file(path: str | Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """An image file -> HxWx3 uint8 RGB, size-checked from its header like a compressed message
    (OSError when the file cannot be read, BadImageError when it is not a usable image)."""
    return decode_compressed(Path(path).suffix.lstrip("."), Path(path).read_bytes(), max_pixels)


def decode_depth(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data,
    big_endian: bool = False,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Depth image (16UC1 millimetres or 32FC1 metres) -> HxW float32 metres, 0 = invalid."""
    if encoding in ("16UC1", "mono16"):
        depth = _raw_view(encoding, height, width, step, data, big_endian, max_pixels)
        depth = depth.astype(np.float32) * 1e-3
    elif encoding == "32FC1":
        check_size(width, height, max_pixels)
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
