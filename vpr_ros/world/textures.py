"""Procedural textures for the test world, drawn in texel units with OpenCV.

Walls carry what local features need at 1-6 m: posters, shapes, text-like marks and noise at
several scales, all random, so every wall region is distinctive. Floors and ceilings get
weaker texture (mottling, seams, scuffs, lights): less to match, but never blank, so depth
and features exist there too. Every texture is a deterministic function of its seed.
"""

from __future__ import annotations

import string

import cv2
import numpy as np

# Texture sides are multiples of this, so that each level of the renderer's mip pyramid
# (cv2.pyrDown halves each side) stays aligned with the level above for 5 levels.
SIDE_MULTIPLE = 32
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX)
_GLYPHS = string.ascii_uppercase + string.digits + "-+#/"


def texture_shape(width_m: float, height_m: float, texels_per_m: float) -> tuple[int, int]:
    """(rows, cols) of a texture for a width_m x height_m surface."""

    def side(metres):
        return max(SIDE_MULTIPLE, int(round(metres * texels_per_m / SIDE_MULTIPLE)) * SIDE_MULTIPLE)

    return side(height_m), side(width_m)


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _smooth_noise(rng, shape, cell_texels: float, amplitude: float, channels: int = 3) -> np.ndarray:
    """Gaussian noise with features about ``cell_texels`` wide (upsampled from a coarse grid)."""
    rows, cols = shape
    small = (max(2, int(round(rows / cell_texels)) + 1), max(2, int(round(cols / cell_texels)) + 1))
    grid = rng.standard_normal((*small, channels), dtype=np.float32) * amplitude
    return cv2.resize(grid, (cols, rows), interpolation=cv2.INTER_CUBIC).reshape(rows, cols, channels)


def _text(rng, length: int) -> str:
    return "".join(_GLYPHS[int(i)] for i in rng.integers(len(_GLYPHS), size=length))


def _put_text(img, rng, x: int, y: int, height_px: float, colour) -> None:
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    scale = height_px / 22.0  # Hershey fonts are ~22 px tall at scale 1
    thickness = max(1, int(round(height_px / 9)))
    cv2.putText(img, _text(rng, int(rng.integers(2, 7))), (x, y), font, scale, colour, thickness, cv2.LINE_AA)


def _shape(img, rng, x: int, y: int, size: int, colour) -> None:
    """One random filled or outlined shape about ``size`` texels across at (x, y)."""
    size = max(size, 2)  # low-resolution textures (tests) still get drawable shapes
    kind = int(rng.integers(6))
    thick = -1 if rng.random() < 0.6 else max(1, size // 8)
    if kind == 0:
        cv2.circle(img, (x, y), max(2, size // 2), colour, thick, cv2.LINE_AA)
    elif kind == 1:
        h = int(size * rng.uniform(0.4, 1.6))
        cv2.rectangle(img, (x, y), (x + size, y + h), colour, thick, cv2.LINE_AA)
    elif kind == 2:
        axes = (max(2, size // 2), max(2, int(size * rng.uniform(0.2, 0.5))))
        cv2.ellipse(img, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, colour, thick, cv2.LINE_AA)
    elif kind == 3:
        pts = (rng.uniform(-size, size, (int(rng.integers(3, 7)), 2)) + (x, y)).astype(np.int32)
        if thick < 0:
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
        else:
            cv2.polylines(img, [pts], True, colour, thick, cv2.LINE_AA)
    elif kind == 4:
        end = (x + int(rng.integers(-2 * size, 2 * size)), y + int(rng.integers(-size, size)))
        cv2.line(img, (x, y), end, colour, max(2, size // 6), cv2.LINE_AA)
    else:
        cv2.drawMarker(img, (x, y), colour, int(rng.integers(7)), size, max(1, size // 8), cv2.LINE_AA)


def _poster(img, rng, tpm: float) -> None:
    rows, cols = img.shape[:2]
    w = int(rng.uniform(0.35, 0.9) * tpm)
    h = int(rng.uniform(0.45, 0.95) * tpm)
    if w >= cols - 4 or h >= rows - 4:
        return
    x = int(rng.integers(2, cols - w - 2))
    y = int(rng.integers(int(0.2 * rows), max(int(0.2 * rows) + 1, int(0.75 * rows) - h)))
    cv2.rectangle(img, (x, y), (x + w, y + h), _colour(rng, 150, 256), -1)
    cv2.rectangle(img, (x, y), (x + w, y + h), _colour(rng, 0, 90), max(2, int(0.012 * tpm)))
    for _ in range(int(rng.integers(8, 16))):
        px, py = int(x + rng.uniform(0.05, 0.95) * w), int(y + rng.uniform(0.05, 0.95) * h)
        _shape(img, rng, px, py, int(rng.uniform(0.03, 0.15) * tpm), _colour(rng))
    for line in range(int(rng.integers(2, 5))):
        _put_text(
            img, rng, x + int(0.06 * w), y + int(h * (0.25 + 0.2 * line)), 0.04 * tpm, _colour(rng, 0, 80)
        )


def wall_texture(
    seed: int | tuple, width_m: float, height_m: float, texels_per_m: float, variant: int = 0
) -> np.ndarray:
    """A wall region, RGB uint8. ``variant`` > 0 gives a look-alike of variant 0: the same layout
    and palette, with a few shapes, one text line, the noise and the brightness changed."""
    rng = np.random.default_rng(seed)
    rows, cols = texture_shape(width_m, height_m, texels_per_m)
    tpm = cols / width_m
    top, bottom = np.array(_colour(rng, 40, 220), np.float32), np.array(_colour(rng, 40, 220), np.float32)
    ramp = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None, None]
    img = np.ascontiguousarray(((1 - ramp) * top + ramp * bottom) * np.ones((1, cols, 1), np.float32))
    img += _smooth_noise(rng, (rows, cols), 0.35 * tpm, 14.0)
    img = np.clip(img, 0, 255).astype(np.uint8)
    area = width_m * height_m
    for _ in range(int(rng.integers(1, 3))):
        _poster(img, rng, tpm)
    for _ in range(int(14 * area)):
        x, y = int(rng.integers(0, cols)), int(rng.integers(0, rows))
        _shape(img, rng, x, y, int(rng.uniform(0.02, 0.2) * tpm), _colour(rng))
    for _ in range(int(4 * area)):
        x, y = int(rng.integers(0, cols)), int(rng.integers(0, rows))
        _put_text(img, rng, x, y, rng.uniform(0.03, 0.09) * tpm, _colour(rng))
    # Skirting board: the same in every room, as in a real building.
    cv2.rectangle(img, (0, rows - int(0.08 * tpm)), (cols, rows), (60, 55, 50), -1)
    noise_rng = rng
    if variant:
        # From here on the look-alike draws differ: small, local changes only.
        noise_rng = np.random.default_rng([*np.atleast_1d(seed), 1000 + variant])
        for _ in range(int(noise_rng.integers(3, 6))):
            x, y = int(noise_rng.integers(0, cols)), int(noise_rng.integers(0, rows))
            _shape(img, noise_rng, x, y, int(noise_rng.uniform(0.04, 0.15) * tpm), _colour(noise_rng))
        _put_text(img, noise_rng, int(0.1 * cols), int(0.3 * rows), 0.06 * tpm, _colour(noise_rng))
    out = img.astype(np.float32)
    out += _smooth_noise(noise_rng, (rows, cols), 0.02 * tpm, 9.0)
    out += noise_rng.standard_normal((rows, cols, 1), dtype=np.float32) * 5.0
    if variant:
        out *= np.float32(noise_rng.uniform(0.95, 1.05))
    return np.clip(out, 0, 255).astype(np.uint8)


def floor_texture(seed: int | tuple, width_m: float, length_m: float, texels_per_m: float) -> np.ndarray:
    """Mottled linoleum with faint tile seams and sparse scuffs."""
    rng = np.random.default_rng(seed)
    rows, cols = texture_shape(width_m, length_m, texels_per_m)
    tpm = cols / width_m
    img = np.array(_colour(rng, 90, 150), np.float32) * np.ones((rows, cols, 1), np.float32)
    img += _smooth_noise(rng, (rows, cols), 0.3 * tpm, 10.0)
    img += _smooth_noise(rng, (rows, cols), 0.04 * tpm, 6.0, channels=1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    seam = max(1, int(0.01 * tpm))
    for k in np.arange(0, max(rows, cols), 0.6 * tpm):
        cv2.line(img, (int(k), 0), (int(k), rows), (70, 70, 70), seam, cv2.LINE_AA)
        cv2.line(img, (0, int(k)), (cols, int(k)), (70, 70, 70), seam, cv2.LINE_AA)
    for _ in range(int(2 * width_m * length_m)):
        x, y = int(rng.integers(0, cols)), int(rng.integers(0, rows))
        _shape(img, rng, x, y, int(rng.uniform(0.03, 0.12) * tpm), _colour(rng, 30, 120))
    out = img.astype(np.float32) + rng.standard_normal((rows, cols, 1), dtype=np.float32) * 4.0
    return np.clip(out, 0, 255).astype(np.uint8)


def ceiling_texture(seed: int | tuple, width_m: float, length_m: float, texels_per_m: float) -> np.ndarray:
    """Light panels with seams, a few lamps and grime."""
    rng = np.random.default_rng(seed)
    rows, cols = texture_shape(width_m, length_m, texels_per_m)
    tpm = cols / width_m
    img = np.array(_colour(rng, 170, 220), np.float32) * np.ones((rows, cols, 1), np.float32)
    img += _smooth_noise(rng, (rows, cols), 0.25 * tpm, 8.0)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for k in np.arange(0, max(rows, cols), 0.6 * tpm):
        cv2.line(img, (int(k), 0), (int(k), rows), (120, 120, 115), max(1, int(0.015 * tpm)), cv2.LINE_AA)
        cv2.line(img, (0, int(k)), (cols, int(k)), (120, 120, 115), max(1, int(0.015 * tpm)), cv2.LINE_AA)
    for _ in range(max(1, int(length_m / 3.0))):
        x, y = int(rng.uniform(0.2, 0.6) * cols), int(rng.integers(0, max(1, rows - int(1.2 * tpm))))
        cv2.rectangle(img, (x, y), (x + int(0.3 * tpm), y + int(1.2 * tpm)), (250, 250, 240), -1)
    for _ in range(int(1.5 * width_m * length_m)):
        x, y = int(rng.integers(0, cols)), int(rng.integers(0, rows))
        _shape(img, rng, x, y, int(rng.uniform(0.02, 0.08) * tpm), _colour(rng, 90, 170))
    out = img.astype(np.float32) + rng.standard_normal((rows, cols, 1), dtype=np.float32) * 3.0
    return np.clip(out, 0, 255).astype(np.uint8)
