"""Decompression bombs and lying headers: refused from the header, before any decoding."""

import struct
import subprocess
import sys
import textwrap
import zlib

import cv2
import numpy as np
import pytest

from vpr_ros.image_conversion import (
    DEFAULT_MAX_IMAGE_PIXELS,
    BadImageError,
    decode_compressed,
    decode_depth,
    decode_raw,
    image_size,
    read_image_file,
)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG: 32000x32000 is ~125 kB on disk, 3 GB decoded as BGR."""
    z = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed pixels
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 16))


def _jpeg_with_size(width: int, height: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((16, 24, 3), 128, np.uint8))
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")  # baseline SOF0: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory) -> bytes:
    data = png_bomb(32000, 32000)
    assert len(data) < 200_000
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(data)
    return path


def test_png_bomb_is_refused_with_small_peak_memory(bomb_png):
    # A fresh process, so ru_maxrss is this decode's peak and not the test session's.
    code = textwrap.dedent(
        f"""
        import resource
        from pathlib import Path
        from vpr_ros.image_conversion import BadImageError, decode_compressed
        data = Path({str(bomb_png)!r}).read_bytes()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            decode_compressed("png", data)
            print("decoded")
        except BadImageError as err:
            print(err.reason)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    reason, grown_mb = out.stdout.split()
    assert reason == "too_large"
    assert int(grown_mb) < 50, f"peak memory grew by {grown_mb} MB"


def test_png_bomb_file_is_refused(bomb_png):
    assert image_size(bomb_png.read_bytes()) == (32000, 32000)
    with pytest.raises(BadImageError) as err:
        read_image_file(bomb_png)
    assert err.value.reason == "too_large"


def test_65535_square_png_is_a_bad_image_not_a_cv2_error():
    data = _png_header_only(65535, 65535)
    with pytest.raises(BadImageError) as err:
        decode_compressed("png", data)
    assert err.value.reason == "too_large"
    # Without our limit OpenCV's own one raises cv2.error: still a bad image.
    with pytest.raises(BadImageError) as err:
        decode_compressed("png", data, max_pixels=0)
    assert err.value.reason == "corrupt_compressed"


def test_jpeg_with_a_huge_sof_is_refused(monkeypatch):
    data = _jpeg_with_size(60000, 50000)
    assert image_size(data) == (60000, 50000)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded a 3 Gpixel JPEG"))
    with pytest.raises(BadImageError) as err:
        decode_compressed("jpeg", data)
    assert err.value.reason == "too_large"


def test_limit_is_a_keyword_and_the_default_is_4096_squared():
    assert DEFAULT_MAX_IMAGE_PIXELS == 4096 * 4096
    ok, png = cv2.imencode(".png", np.zeros((30, 40, 3), np.uint8))
    data = png.tobytes()
    assert decode_compressed("png", data, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(BadImageError) as err:
        decode_compressed("png", data, max_pixels=1199)
    assert err.value.reason == "too_large"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00", "corrupt_compressed"),  # IHDR cut short
        (b"\x89PNG\r\n\x1a\n", "corrupt_compressed"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "corrupt_compressed"),  # JPEG cut before any SOF
        (b"\xff\xd8\xff\xda\x00\x08", "corrupt_compressed"),  # scan data before a SOF
        (_png_header_only(0, 10), "corrupt_compressed"),  # names no size
        (b"\x89PNG not really", "corrupt_compressed"),  # a broken signature
        (b"GIF89a\x10\x00\x10\x00", "unreadable_header"),  # a format the header parser does not know
        (b"\x00" * 64, "unreadable_header"),
        (b"\xff\xd8" + b"\xff" * 100_000, "corrupt_compressed"),  # fill bytes only: a bounded walk
    ],
)
def test_unparseable_headers_are_refused_before_decoding(data, reason, monkeypatch):
    def no_decoding(*args):
        raise AssertionError("cv2.imdecode called on an image of unknown size")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(BadImageError) as err:
        decode_compressed("png", data)
    assert err.value.reason == reason


def test_jpeg_size_skips_an_embedded_thumbnail():
    real = _jpeg_with_size(24, 16)
    thumbnail = _jpeg_with_size(60000, 50000)  # inside APP1 (EXIF): not the image's size
    app1 = b"Exif\x00\x00" + thumbnail
    data = real[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + real[2:]
    assert image_size(data) == (24, 16)
    assert decode_compressed("jpeg", data).shape == (16, 24, 3)


def test_truncated_jpeg_of_a_real_image_is_refused():
    data = _jpeg_with_size(24, 16)
    sof = data.index(b"\xff\xc0")
    with pytest.raises(BadImageError) as err:
        decode_compressed("jpeg", data[: sof + 6])
    assert err.value.reason == "corrupt_compressed"


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".ppm", ".pgm", ".tif", ".webp"])
def test_folder_formats_still_read(tmp_path, ext):
    rgb = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    path = tmp_path / f"img{ext}"
    bgr = rgb[:, :, ::-1]
    assert cv2.imwrite(str(path), bgr[:, :, 0] if ext == ".pgm" else bgr)
    assert image_size(path.read_bytes()) == (20, 12)
    assert read_image_file(path).shape == (12, 20, 3)


def test_raw_image_claiming_10000_squared_with_short_data_is_too_large():
    with pytest.raises(BadImageError) as err:
        decode_raw("rgb8", 10000, 10000, 30000, b"\0" * 100)
    assert err.value.reason == "too_large"
    with pytest.raises(BadImageError) as err:
        decode_depth("32FC1", 10000, 10000, 40000, b"\0" * 100)
    assert err.value.reason == "too_large"
    with pytest.raises(BadImageError) as err:
        decode_depth("16UC1", 10000, 10000, 20000, b"\0" * 100)
    assert err.value.reason == "too_large"
    # Within the limit the old check still answers.
    with pytest.raises(BadImageError) as err:
        decode_raw("rgb8", 100, 100, 300, b"\0" * 100)
    assert err.value.reason == "size_mismatch"


def test_raw_image_limit_through_the_ros_conversion():
    pytest.importorskip("rclpy", reason="the ROS message types are needed")
    from sensor_msgs.msg import CompressedImage, Image

    from vpr_ros.ros.conversions import image_msg_to_rgb

    msg = Image(height=10000, width=10000, encoding="rgb8", step=30000, data=b"\0" * 30)
    with pytest.raises(BadImageError) as err:
        image_msg_to_rgb(msg)
    assert err.value.reason == "too_large"
    small = Image(height=2, width=2, encoding="rgb8", step=6, data=b"\0" * 12)
    assert image_msg_to_rgb(small).shape == (2, 2, 3)
    with pytest.raises(BadImageError):
        image_msg_to_rgb(small, max_pixels=3)
    compressed = CompressedImage(format="png", data=_png_header_only(65535, 65535))
    with pytest.raises(BadImageError) as err:
        image_msg_to_rgb(compressed)
    assert err.value.reason == "too_large"


def test_image_folder_source_checks_the_header_first(tmp_path, bomb_png):
    from vpr_ros.evaluation.sources import ImageFolderSource, SourceError

    folder = tmp_path / "images"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "0001.png"), np.zeros((8, 8, 3), np.uint8))
    (folder / "0002.png").write_bytes(bomb_png.read_bytes())
    frames = iter(ImageFolderSource(folder))
    assert next(frames).image.shape == (8, 8, 3)
    with pytest.raises(SourceError, match="too_large"):
        next(frames)
    assert [f.image.shape for f in ImageFolderSource(folder, max_image_pixels=0, max_frames=1)] == [(8, 8, 3)]
