"""decode_image on real odd and hostile files written by tests/imagefactory.py."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from gearsight.image.decode import DecodeError, decode_image, to_rgb
from imagefactory import assert_decoded, make_bad_images, make_good_images, write_huge_png_header


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_good_images(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return make_bad_images(tmp_path_factory.mktemp("bad"))


# Listed by hand so each case is its own test id; test_every_factory_case_is_listed keeps them in step.
GOOD_NAMES = [
    "rgb.png", "rgb.bmp", "rgb_lossless.webp", "rgb.tif", "rgb.jpg", "rgb_lossy.webp", "gray.png", "bilevel.png",
    "gray16.png", "gray16.tif", "int32.tif", "int32_wide.tif", "rgb16.png",
    "rgba.png", "rgba.webp", "la.png", "palette_trns.png", "palette_trns.gif", "rgb_colorkey.png",
    "cmyk.jpg", "cmyk.tif", "multipage.tif", "animated.gif", "animated.webp", "multipicture.jpg", "exif_rot6.jpg", "exif_rot6.png",
]
BAD_NAMES = ["truncated.jpg", "truncated.png", "empty.jpg", "text.jpg", "huge_header.png", "corrupt.png",
             "postscript.jpg"]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_file_decodes_to_expected_pixels(good, name):
    path, expect = good[name]
    assert_decoded(decode_image(path), expect, name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_file_raises_with_path_and_reason(bad, name):
    path, expect = bad[name]
    with pytest.raises(DecodeError) as info:
        decode_image(path)
    err = info.value
    assert err.source == str(path)
    assert expect.error in err.reason, err.reason
    assert str(path) in str(err) and err.reason in str(err)


def test_every_factory_case_is_listed(good, bad):
    # A case the factory writes but the lists above miss would go untested.
    assert sorted(GOOD_NAMES) == sorted(good) and sorted(BAD_NAMES) == sorted(bad)
    assert all(c.expect.ok for c in good.values()) and not any(c.expect.ok for c in bad.values())


def test_truncated_is_reported_as_truncated_not_padded(bad):
    """Cut at half, a JPEG/PNG is refused as truncated, never returned with its lower half filled grey."""
    for name in ("truncated.jpg", "truncated.png"):
        with pytest.raises(DecodeError) as info:
            decode_image(bad[name].path.read_bytes())
        assert info.value.reason.startswith("truncated"), info.value.reason
    with pytest.raises(DecodeError) as info:
        decode_image(bad["corrupt.png"].path)
    assert "truncated" not in info.value.reason, info.value.reason


def test_bytes_file_object_and_path_agree(good):
    path, expect = good["palette_trns.png"]
    data = path.read_bytes()
    for src in (path, str(path), data, bytearray(data), memoryview(data), io.BytesIO(data)):
        assert_decoded(decode_image(src), expect, type(src).__name__)
    with path.open("rb") as fh:
        assert_decoded(decode_image(fh), expect, "open file")


def test_error_names_bytes_and_file_objects(bad):
    data = bad["text.jpg"].path.read_bytes()
    with pytest.raises(DecodeError, match=r"^<bytes>: not an image"):
        decode_image(data)
    with pytest.raises(DecodeError, match="empty"):
        decode_image(b"")
    with bad["text.jpg"].path.open("rb") as fh, pytest.raises(DecodeError) as info:
        decode_image(fh)
    assert info.value.source == str(bad["text.jpg"].path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DecodeError, match="not found"):
        decode_image(tmp_path / "nope.jpg")
    with pytest.raises(DecodeError, match="not a file"):
        decode_image(tmp_path)


def test_huge_declared_size_refused_fast(tmp_path):
    path = write_huge_png_header(tmp_path / "bomb.png")
    assert path.stat().st_size < 100
    start = time.perf_counter()
    with pytest.raises(DecodeError, match="pixel limit"):
        decode_image(path)
    assert time.perf_counter() - start < 1.0


def test_max_pixels_is_checked_before_decoding(tmp_path):
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(small)
    with pytest.raises(DecodeError, match=r"declared size 40x30 exceeds the 1,000-pixel limit"):
        decode_image(small, max_pixels=1_000)
    assert decode_image(small, max_pixels=1_200).shape == (30, 40, 3)
    # 100 M pixels: over our default limit, under the twice-as-large limit at which Pillow refuses to open.
    write_huge_png_header(tmp_path / "big.png", 10_000, 10_000)
    start = time.perf_counter()
    with pytest.raises(DecodeError, match="10000x10000 exceeds the 89,478,485-pixel limit"):
        decode_image(tmp_path / "big.png")
    assert time.perf_counter() - start < 1.0


def test_to_rgb_scales_deep_pil_images():
    """The same rules hold for in-memory PIL images (predict() accepts them)."""
    i16 = Image.fromarray(np.array([[65535, 32896]], dtype=np.uint16))
    assert to_rgb(i16).getpixel((1, 0)) == (128, 128, 128)
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert [to_rgb(f).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    nan = Image.fromarray(np.array([[np.nan, 0.0, 2.0]], dtype=np.float32))
    assert [to_rgb(nan).getpixel((x, 0))[0] for x in range(3)] == [0, 0, 255]
