import cv2
import numpy as np
import pytest

from vpr_ros.image_conversion import (
    BadImageError,
    decode_compressed,
    decode_depth,
    decode_raw,
    resize_to_width,
)


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)


def test_rgb8_and_bgr8(rgb):
    assert np.array_equal(decode_raw("rgb8", 6, 8, 24, rgb.tobytes()), rgb)
    bgr = rgb[:, :, ::-1].copy()
    assert np.array_equal(decode_raw("bgr8", 6, 8, 24, bgr.tobytes()), rgb)


def test_rgba8_and_bgra8_drop_alpha(rgb):
    alpha = np.full((6, 8, 1), 7, np.uint8)
    assert np.array_equal(decode_raw("rgba8", 6, 8, 32, np.concatenate([rgb, alpha], 2).tobytes()), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], alpha], 2)
    assert np.array_equal(decode_raw("bgra8", 6, 8, 32, bgra.tobytes()), rgb)


def test_mono8_becomes_grey_rgb(rgb):
    grey = rgb[:, :, 0].copy()
    out = decode_raw("mono8", 6, 8, 8, grey.tobytes())
    assert out.shape == (6, 8, 3) and np.array_equal(out[:, :, 1], grey)


def test_row_padding_is_respected(rgb):
    padded = np.zeros((6, 32), np.uint8)
    padded[:, :24] = rgb.reshape(6, 24)
    assert np.array_equal(decode_raw("rgb8", 6, 8, 32, padded.tobytes()), rgb)


def test_mono16_big_and_little_endian():
    grey = np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000
    little = decode_raw("mono16", 6, 8, 16, grey.astype("<u2").tobytes(), big_endian=False)
    big = decode_raw("mono16", 6, 8, 16, grey.astype(">u2").tobytes(), big_endian=True)
    assert np.array_equal(little, big)
    assert little[0, 0, 0] == 0 and little[-1, -1, 0] == 255


def test_compressed_jpeg_and_png(rgb):
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok and np.array_equal(decode_compressed("png", png.tobytes()), rgb)
    big = cv2.resize(rgb, (64, 48), interpolation=cv2.INTER_NEAREST)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
    out = decode_compressed("jpeg", jpg.tobytes())
    assert out.shape == big.shape and np.abs(out.astype(int) - big).mean() < 8


@pytest.mark.parametrize(
    "call, reason",
    [
        (lambda: decode_raw("rgb8", 6, 8, 24, b"\x00" * 100), "size_mismatch"),
        (lambda: decode_raw("rgb8", 6, 8, 20, b"\x00" * 120), "size_mismatch"),
        (lambda: decode_raw("yuv_weird", 6, 8, 24, b"\x00" * 144), "unknown_encoding"),
        (lambda: decode_raw("rgb8", 0, 0, 0, b""), "empty"),
        (lambda: decode_compressed("jpeg", b""), "empty"),
        (
            lambda: decode_compressed("jpeg", b"\xff\xd8\xff\xe0 this is not a jpeg at all"),
            "corrupt_compressed",
        ),
    ],
)
def test_bad_images_raise_with_a_reason(call, reason):
    with pytest.raises(BadImageError) as err:
        call()
    assert err.value.reason == reason


def test_truncated_jpeg_is_rejected_or_decoded_but_never_crashes(rgb):
    ok, jpg = cv2.imencode(".jpg", cv2.resize(rgb, (64, 48)))
    data = jpg.tobytes()[: len(jpg) // 3]
    try:
        out = decode_compressed("jpeg", data)
        assert out.shape == (48, 64, 3)  # libjpeg may pad a truncated file with grey
    except BadImageError as err:
        assert err.reason == "corrupt_compressed"


def test_depth_16uc1_millimetres_and_32fc1_metres():
    mm = np.array([[0, 1500], [2000, 65535]], np.uint16)
    assert np.allclose(decode_depth("16UC1", 2, 2, 4, mm.tobytes()), mm * 1e-3)
    m = np.array([[0.5, np.nan], [np.inf, 3.0]], np.float32)
    out = decode_depth("32FC1", 2, 2, 8, m.tobytes())
    assert np.allclose(out, [[0.5, 0.0], [0.0, 3.0]])
    with pytest.raises(BadImageError):
        decode_depth("rgb8", 2, 2, 6, b"\x00" * 12)


def test_resize_to_width_keeps_aspect():
    img = np.zeros((480, 640, 3), np.uint8)
    out, scale = resize_to_width(img, 320)
    assert out.shape == (240, 320, 3) and scale == 0.5
    same, s = resize_to_width(img, 1000)
    assert same is img and s == 1.0
